"""The settings' values: the ``Settings`` dataclass, its limits and the error that names a bad
variable and its fix."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from moonmind_codex.core.policy import DEFAULT_ALLOWED_COMMANDS
from moonmind_codex.core.shard import Shard
from moonmind_codex.core.workspace import DEFAULT_PREFIX

ENV_PREFIX = "MOONMIND_CODEX_"


# The most a *_FILE twin may hold: a URL with a password, a path, a number.
MAX_SETTING_FILE_BYTES = 64 * 1024


# Not fields of Settings: read by scripts/setup.sh and the broker image, set by jobs.py in
# every job container (RUN_ID, PHASE), read before parsing (ENV_FILE), or an old spelling of
# a field (ASSIGNMENTS_DB, now DATABASE_URL), or no longer used (WORKSPACE_VOLUME: the one shared
# workspace volume, replaced by a volume per run; still accepted so older fleet.env files load).
NON_RUNTIME_NAMES = frozenset(
    {
        "EXTRA_CA_DIR",
        "BASE_IMAGE",
        "BROKER_USER",
        "BROKER_PASSWORD",
        "BROKER_CONSUMER_TIMEOUT_MS",
        "RUN_ID",
        "PHASE",
        "ENV_FILE",
        "ASSIGNMENTS_DB",
        "WORKSPACE_VOLUME",
    }
)


# A minimal Codex call that exercises a login (and lets the CLI refresh it): no repository,
# no session files left in the auth volume, a read-only sandbox, no colour codes in the log.
DEFAULT_KEEPALIVE_COMMAND = (
    "codex", "exec", "--skip-git-repo-check", "--ephemeral", "--sandbox", "read-only",
    "--color", "never", "Reply with OK.",
)  # fmt: skip


# Rendered by the moonmind_codex_workers role on every worker host (no secrets in it).
DEFAULT_ENV_FILE = Path("/etc/moonmind-codex/fleet.env")


QueueMode = Literal["sharded", "single"]


# The range Docker accepts for --cpu-shares (the kernel's cpu.shares bounds).
MIN_CPU_SHARES = 2


# Below these a Codex job cannot start its tools; a cap on cores as `docker run --cpus`.
MIN_JOB_MEMORY_MB = 256


MIN_JOB_PIDS = 64


MIN_JOB_CPUS = 0.1


MAX_JOB_CPUS = 1024.0


MAX_CPU_SHARES = 262144


# The largest uid/gid Linux gives a user ((uid_t)-1 is "no user").
MAX_ID = 2**32 - 2


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable and the fix."""


@dataclass(frozen=True)
class Settings:
    """Validated runtime settings. Build with :func:`load_settings`, not by hand."""

    broker_url: str = "amqp://localhost:5672//"
    shard_count: int = 3
    queue_mode: QueueMode = "sharded"
    queue_prefix: str = "codex"
    default_queue: str = "celery"
    shard: int | None = None
    auth_volume_template: str = "codex_auth_{shard}"
    auth_volume_override: str | None = None
    host_name: str = field(default_factory=socket.gethostname)
    job_image: str = "moonmind-codex/job:latest"
    # A canary: these shards run another job image (another Codex CLI), the rest job_image.
    shard_job_images: Mapping[int, str] = field(default_factory=dict)
    job_uid: int = 1000
    job_gid: int = 1000
    job_timeout_seconds: float = 3600.0
    # The jobs' own network: the role moonmind_codex_job_network makes it, with a firewall that
    # keeps jobs away from the broker, the host and other containers (docs/security.md).
    job_network: str = "moonmind_codex_jobs"
    # CPU weight of every job-image container (jobs, pre-flight probes, logins), against the
    # engine's default of 1024 for everything else: when the CPU is contended, the fleet's
    # control plane (broker, workers, default-queue workers) runs first; when it is not, a job
    # may still use every core. 0 leaves the engine's default.
    job_cpu_shares: int = 256
    # Hard limits of every job-image container, so one runaway job cannot take the host's
    # memory, process table or every core from the other shards (0: no limit).
    job_memory_mb: int = 8192
    job_pids_limit: int = 4096
    job_cpus: float = 0.0
    # The cores job-image containers may run on (docker --cpuset-cpus, e.g. "1-3"): leaving a
    # core to the broker, the workers and the host's default-queue workers keeps their latency
    # when every shard is busy. None: any core.
    job_cpuset: str | None = None
    preflight_timeout_seconds: float = 30.0
    busy_retry_seconds: float = 30.0
    busy_max_retries: int = 20
    last_refresh_warn_days: float = 7.0
    # Keep-alives (moonmind_codex.core.keepalive): an idle shard whose ChatGPT login was last
    # refreshed longer ago than keepalive_after_days gets one minimal Codex call on its queue.
    keepalive_enabled: bool = True
    keepalive_command: tuple[str, ...] = DEFAULT_KEEPALIVE_COMMAND
    keepalive_after_days: float = 7.0
    keepalive_idle_minutes: float = 30.0
    keepalive_retry_hours: float = 12.0
    keepalive_stagger_minutes: float = 60.0
    keepalive_check_seconds: float = 300.0
    keepalive_timeout_seconds: float = 600.0
    # Each run's workspace is the Docker volume <prefix><run_id> (moonmind_codex.core.workspace).
    workspace_volume_prefix: str = DEFAULT_PREFIX
    artifacts_dir: Path = Path("var/artifacts")
    audit_log: Path | None = None
    # The run store (runs, phase attempts, sticky queues): SQLite for one host, PostgreSQL
    # (postgresql+psycopg://...) when producers and workers span hosts.
    database_url: str = "sqlite:///var/state/moonmind-codex.sqlite3"
    codex_task_patterns: tuple[str, ...] = ("*.codex_*",)
    # The first words a Codex phase's command may have (moonmind_codex.core.policy).
    allowed_commands: tuple[str, ...] = DEFAULT_ALLOWED_COMMANDS
    worker_container: str | None = None
    docker_url: str | None = None
    # Broker transport: with an amqps:// URL the broker's certificate is verified against this
    # CA bundle (the fleet CA the playbook made), or the system's CAs when it is unset.
    broker_ca_path: Path | None = None
    # Signed task messages (Celery's ``auth`` serializer): this process signs what it sends with
    # the key and certificate, and a worker runs only messages signed by a certificate in the
    # trust directory. All three or none; none means unsigned JSON (development, tests).
    signing_key_path: Path | None = None
    signing_cert_path: Path | None = None
    signing_trust_dir: Path | None = None
    # How long a signed task message stays valid after it was sent (its signed expiry): a
    # captured message cannot be replayed later. A phase waiting longer in its queue is refused
    # and audited; `runs retry` sends it again.
    signed_message_ttl_seconds: float = 86400.0
    # `celery control`/`inspect` on shard workers: off, so a broker user cannot shut a shard
    # down or read its requests; cancellations go through the run store instead.
    remote_control: bool = False
    # Whether this process declares the queues it uses. A provisioned broker declares them
    # itself (its definitions) and its users may not: the role sets false there.
    declare_queues: bool = True
    # A file holding the fleet's random key for login fingerprints (the same on every host):
    # copied logins are fenced only when it is set (moonmind_codex.core.fence). Read by workers.
    fingerprint_key_file: Path | None = None
    # A new run whose shard is quarantined or fenced goes to a healthy shard (then sticks).
    failover: bool = False

    @property
    def signing(self) -> bool:
        """Whether task messages are signed and only signed ones are accepted."""
        return self.signing_key_path is not None

    @property
    def single_queue(self) -> str:
        return self.queue_prefix

    def queue_for_shard(self, shard: int) -> str:
        """The queue a shard's worker consumes (``codex-{n}``, or ``codex`` in single mode)."""
        self.check_shard(shard)
        if self.queue_mode == "single":
            return self.single_queue
        return f"{self.queue_prefix}-{shard}"

    def volume_for_shard(self, shard: int) -> str:
        """The Docker named volume holding shard ``shard``'s Codex login."""
        self.check_shard(shard)
        if self.auth_volume_override is not None and shard == self.shard:
            return self.auth_volume_override
        return self.auth_volume_template.format(shard=shard)

    def check_shard(self, shard: int) -> None:
        if isinstance(shard, bool) or not isinstance(shard, int):
            raise SettingsError(f"shard must be an integer, got {shard!r}")
        if not 0 <= shard < self.shard_count:
            raise SettingsError(
                f"shard {shard} is out of range: this fleet has {self.shard_count} shards "
                f"(0..{self.shard_count - 1}); set {ENV_PREFIX}SHARD_COUNT if the fleet grew"
            )

    def locate_shard(self, number: int) -> Shard:
        """Shard ``number``'s queue, volume and host; raises for a shard outside the fleet."""
        return Shard(
            number=number,
            queue=self.queue_for_shard(number),
            volume=self.volume_for_shard(number),
            host=self.host_name,
        )

    def job_image_for(self, shard: int) -> str:
        """The job image of ``shard``'s containers: its canary image, or the fleet's."""
        return self.shard_job_images.get(shard, self.job_image)

    @property
    def served_shard(self) -> Shard:
        """The shard this worker serves; a clear error when it was started without one."""
        if self.shard is None:
            raise SettingsError(
                f"{ENV_PREFIX}SHARD is not set: a Codex worker serves exactly one shard; "
                f"set it to a number in 0..{self.shard_count - 1}"
            )
        return self.locate_shard(self.shard)

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with some fields changed, validated like the original."""
        # Imported here: the rules read this module's Settings.
        from moonmind_codex.settings.rules import validate

        updated = replace(self, **changes)  # type: ignore[arg-type]
        validate(updated)
        return updated
