"""The one settings module: every runtime knob, read from ``MOONMIND_CODEX_*`` variables.

Settings are parsed and validated once, up front, so a typo fails the worker at start with a
message naming the variable and the fix instead of surfacing as a wrong queue an hour later.
Secrets (the broker URL carries the broker password) can be given as a file path through the
``*_FILE`` twin of a variable, so they need not sit in a container's environment.

On a provisioned host the playbook renders the workers' environment once, into
``/etc/moonmind-codex/fleet.env``; :func:`load_settings` reads it underneath the process
environment, so the operator's CLI on that host names the same host, volumes and job uid as the
workers do.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

# The shard value lives in its own module (the job image's pre-flight imports it at every job
# start, and this one is costly to import).
from moonmind_codex.core import fence
from moonmind_codex.core.policy import ANY_COMMAND, DEFAULT_ALLOWED_COMMANDS, command_allowed
from moonmind_codex.core.shard import Shard
from moonmind_codex.core.workspace import DEFAULT_PREFIX, prefix_problem

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

_VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")
_CPU_LIST = re.compile(r"\d{1,4}(-\d{1,4})?(,\d{1,4}(-\d{1,4})?)*")


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
        updated = replace(self, **changes)  # type: ignore[arg-type]
        _validate(updated)
        return updated


def _read(env: Mapping[str, str], name: str) -> str | None:
    """Value of ``MOONMIND_CODEX_<name>``, or of the file its ``_FILE`` twin names."""
    key = ENV_PREFIX + name
    file_key = key + "_FILE"
    if key in env and file_key in env:
        raise SettingsError(f"set either {key} or {file_key}, not both")
    if file_key in env:
        path = Path(env[file_key])
        try:
            with path.open("rb") as source:
                # A setting is a line, not a stream (a twin pointed at /dev/zero must not hang).
                raw = source.read(MAX_SETTING_FILE_BYTES + 1)
            text = raw.decode("utf-8").strip()
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            # ValueError: a NUL byte in the path; UnicodeDecodeError: the file is not text.
            why = getattr(exc, "strerror", None) or (
                "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else "not a usable path"
            )
            raise SettingsError(
                f"{file_key}={env[file_key]!r:.200} cannot be read ({why}); "
                "point it at a readable file holding the value"
            ) from None
        if len(raw) > MAX_SETTING_FILE_BYTES:
            raise SettingsError(
                f"{file_key}={env[file_key]!r:.200} holds more than {MAX_SETTING_FILE_BYTES} "
                "bytes; point it at a file holding only the value"
            )
        return text
    value = env.get(key)
    if value is None:
        return None
    return value.strip()


def _int(
    env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int | None = None
) -> int:
    raw = _read(env, name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw, 10)
    except ValueError:
        raise SettingsError(
            f"{ENV_PREFIX}{name}={raw!r:.200} is not a whole number; set it to an integer >= "
            f"{minimum}"
        ) from None
    if value < minimum:
        raise SettingsError(f"{ENV_PREFIX}{name}={value} must be >= {minimum}")
    if maximum is not None and value > maximum:
        raise SettingsError(f"{ENV_PREFIX}{name}={value} must be <= {maximum}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    raw = _read(env, name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(
            f"{ENV_PREFIX}{name}={raw!r:.200} is not a number; set it to a number > {minimum}"
        ) from None
    if not value > minimum:
        raise SettingsError(f"{ENV_PREFIX}{name}={value} must be > {minimum}")
    if not math.isfinite(value):
        raise SettingsError(
            f"{ENV_PREFIX}{name}={raw!r:.200} is not a finite number; set it to a number > "
            f"{minimum}"
        )
    return value


def _str(env: Mapping[str, str], name: str, default: str) -> str:
    raw = _read(env, name)
    return default if raw is None or raw == "" else raw


def _optional_str(env: Mapping[str, str], name: str) -> str | None:
    raw = _read(env, name)
    return None if raw is None or raw == "" else raw


def _optional_path(env: Mapping[str, str], name: str) -> Path | None:
    raw = _optional_str(env, name)
    if raw is None:
        return None
    if not raw.startswith("/"):
        raise SettingsError(
            f"{ENV_PREFIX}{name}={raw!r} must be an absolute path (it is read by workers "
            "whose working directory differs from yours)"
        )
    return Path(raw)


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _optional_str(env, name)
    if raw is None:
        return default
    if raw.strip().lower() in _TRUE:
        return True
    if raw.strip().lower() in _FALSE:
        return False
    raise SettingsError(f"{ENV_PREFIX}{name}={raw!r} is not a yes/no value; use true or false")


def read_env_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines of an env file (as ``docker run --env-file`` reads them)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(
            f"{path} cannot be read ({getattr(exc, 'strerror', None) or type(exc).__name__}); "
            f"fix its permissions, or point {ENV_PREFIX}ENV_FILE at another file ('' for none)"
        ) from None
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, sep, value = stripped.partition("=")
        if not sep or not name.startswith(ENV_PREFIX):
            raise SettingsError(
                f"{path} line {number} is not a {ENV_PREFIX}NAME=value line; re-render it with "
                "ansible-playbook playbooks/site.yml"
            )
        values[name] = value
    return values


def process_environment() -> dict[str, str]:
    """``os.environ`` over the host's rendered fleet environment (when there is one).

    A variable of the process replaces the file's setting in either form: ``X`` set by hand
    wins over the file's ``X_FILE`` (fleet.env names its secrets by file) and the other way round.
    """
    env = dict(os.environ)
    file_name = env.get(ENV_PREFIX + "ENV_FILE")
    path = DEFAULT_ENV_FILE if file_name is None else (Path(file_name) if file_name else None)
    if path is None:
        return env
    rendered = read_env_file(path)
    for key in env:
        if key.startswith(ENV_PREFIX):
            twin = key.removesuffix("_FILE") if key.endswith("_FILE") else key + "_FILE"
            rendered.pop(twin, None)
    return {**rendered, **env}


def _refuse_unknown_names(env: Mapping[str, str]) -> None:
    """A ``MOONMIND_CODEX_*`` variable that names no setting is a typo: refused, naming them all."""
    known = {f.name.upper() for f in Settings.__dataclass_fields__.values()}
    known |= {"AUTH_VOLUME", "FINGERPRINT_KEY"}
    for key in env:
        if key.startswith(ENV_PREFIX):
            full_name = key[len(ENV_PREFIX) :]
            name = full_name.removesuffix("_FILE")
            if full_name not in NON_RUNTIME_NAMES and name not in known | NON_RUNTIME_NAMES:
                raise SettingsError(
                    f"{key} is not a moonmind-codex setting (typo?); known settings: "
                    + ", ".join(sorted(ENV_PREFIX + k for k in known))
                )


def _shard(env: Mapping[str, str]) -> int | None:
    shard_raw = _read(env, "SHARD")
    if shard_raw in (None, ""):
        return None
    try:
        return int(shard_raw or "", 10)
    except ValueError:
        raise SettingsError(
            f"{ENV_PREFIX}SHARD={shard_raw!r} is not a whole number; set it to the shard "
            "this worker serves, e.g. 0"
        ) from None


def _queue_mode(env: Mapping[str, str]) -> str:
    mode = _str(env, "QUEUE_MODE", "sharded")
    if mode not in ("sharded", "single"):
        raise SettingsError(
            f"{ENV_PREFIX}QUEUE_MODE={mode!r} is not valid; use 'sharded' (one codex-N queue "
            "per shard, the default) or 'single' (one shared 'codex' queue)"
        )
    return mode


def _comma_list(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """A comma-separated list (blank items dropped), or ``default`` when the variable is unset."""
    raw = _optional_str(env, name)
    if raw is None:
        return default
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Parse and validate settings from ``env``.

    By default: the process environment over the host's fleet environment file
    (:func:`process_environment`). Raises :class:`SettingsError` naming the first bad variable
    and how to fix it.
    """
    env = process_environment() if env is None else env
    _refuse_unknown_names(env)
    # In groups, each its own function (a 70-field constructor call would be one long one).
    settings = Settings(
        **_fleet_fields(env), **_job_fields(env), **_keepalive_fields(env), **_transport_fields(env)
    )
    _validate(settings)
    return settings


def _fleet_fields(env: Mapping[str, str]) -> dict[str, Any]:
    """Shards, queues, volumes and routing."""
    return {
        "shard_count": _int(env, "SHARD_COUNT", Settings.shard_count, 1),
        "queue_mode": _queue_mode(env),
        "queue_prefix": _str(env, "QUEUE_PREFIX", Settings.queue_prefix),
        "default_queue": _str(env, "DEFAULT_QUEUE", Settings.default_queue),
        "shard": _shard(env),
        "auth_volume_template": _str(env, "AUTH_VOLUME_TEMPLATE", Settings.auth_volume_template),
        "auth_volume_override": _optional_str(env, "AUTH_VOLUME"),
        "host_name": _str(env, "HOST_NAME", socket.gethostname()),
        "codex_task_patterns": _comma_list(
            env, "CODEX_TASK_PATTERNS", Settings.codex_task_patterns
        ),
        "failover": _bool(env, "FAILOVER", Settings.failover),
    }


def _job_fields(env: Mapping[str, str]) -> dict[str, Any]:
    """The job containers and their limits, a phase's timeouts and retries, and where runs keep
    their files."""
    return {
        "job_image": _str(env, "JOB_IMAGE", Settings.job_image),
        "shard_job_images": parse_shard_job_images(_optional_str(env, "SHARD_JOB_IMAGES")),
        "job_uid": _int(env, "JOB_UID", Settings.job_uid, 1, MAX_ID),
        "job_gid": _int(env, "JOB_GID", Settings.job_gid, 1, MAX_ID),
        "job_timeout_seconds": _float(env, "JOB_TIMEOUT_SECONDS", Settings.job_timeout_seconds, 0),
        "job_network": _str(env, "JOB_NETWORK", Settings.job_network),
        "job_cpu_shares": _int(env, "JOB_CPU_SHARES", Settings.job_cpu_shares, 0),
        "job_memory_mb": _int(env, "JOB_MEMORY_MB", Settings.job_memory_mb, 0),
        "job_pids_limit": _int(env, "JOB_PIDS_LIMIT", Settings.job_pids_limit, 0),
        # 0 (no cap) is allowed here; the range check names the valid values.
        "job_cpus": _float(env, "JOB_CPUS", Settings.job_cpus, -1),
        "job_cpuset": _optional_str(env, "JOB_CPUSET"),
        "preflight_timeout_seconds": _float(
            env, "PREFLIGHT_TIMEOUT_SECONDS", Settings.preflight_timeout_seconds, 0
        ),
        "busy_retry_seconds": _float(env, "BUSY_RETRY_SECONDS", Settings.busy_retry_seconds, 0),
        "busy_max_retries": _int(env, "BUSY_MAX_RETRIES", Settings.busy_max_retries, 0),
        "last_refresh_warn_days": _float(
            env, "LAST_REFRESH_WARN_DAYS", Settings.last_refresh_warn_days, 0
        ),
        "workspace_volume_prefix": _str(
            env, "WORKSPACE_VOLUME_PREFIX", Settings.workspace_volume_prefix
        ),
        "artifacts_dir": Path(_str(env, "ARTIFACTS_DIR", str(Settings.artifacts_dir))),
        "allowed_commands": _comma_list(env, "ALLOWED_COMMANDS", Settings.allowed_commands),
    }


def _keepalive_fields(env: Mapping[str, str]) -> dict[str, Any]:
    """The keep-alive of each shard's login."""
    return {
        "keepalive_enabled": _bool(env, "KEEPALIVE_ENABLED", Settings.keepalive_enabled),
        "keepalive_command": _command(env, "KEEPALIVE_COMMAND", Settings.keepalive_command),
        "keepalive_after_days": _float(
            env, "KEEPALIVE_AFTER_DAYS", Settings.keepalive_after_days, 0
        ),
        "keepalive_idle_minutes": _float(
            env, "KEEPALIVE_IDLE_MINUTES", Settings.keepalive_idle_minutes, 0
        ),
        "keepalive_retry_hours": _float(
            env, "KEEPALIVE_RETRY_HOURS", Settings.keepalive_retry_hours, 0
        ),
        # 0 (no stagger) is allowed here; the range check says so.
        "keepalive_stagger_minutes": _float(
            env, "KEEPALIVE_STAGGER_MINUTES", Settings.keepalive_stagger_minutes, -1
        ),
        "keepalive_check_seconds": _float(
            env, "KEEPALIVE_CHECK_SECONDS", Settings.keepalive_check_seconds, 0
        ),
        "keepalive_timeout_seconds": _float(
            env, "KEEPALIVE_TIMEOUT_SECONDS", Settings.keepalive_timeout_seconds, 0
        ),
    }


def _transport_fields(env: Mapping[str, str]) -> dict[str, Any]:
    """The broker, the run store, the engine, signing, fencing and the audit log."""
    audit_raw = _optional_str(env, "AUDIT_LOG")
    return {
        "broker_url": _str(env, "BROKER_URL", Settings.broker_url),
        "audit_log": Path(audit_raw) if audit_raw is not None else None,
        "database_url": _database_url(env),
        "worker_container": _optional_str(env, "WORKER_CONTAINER"),
        "docker_url": _optional_str(env, "DOCKER_URL"),
        "broker_ca_path": _optional_path(env, "BROKER_CA_PATH"),
        "signing_key_path": _optional_path(env, "SIGNING_KEY_PATH"),
        "signing_cert_path": _optional_path(env, "SIGNING_CERT_PATH"),
        "signing_trust_dir": _optional_path(env, "SIGNING_TRUST_DIR"),
        "signed_message_ttl_seconds": _float(
            env, "SIGNED_MESSAGE_TTL_SECONDS", Settings.signed_message_ttl_seconds, 0
        ),
        "remote_control": _bool(env, "REMOTE_CONTROL", Settings.remote_control),
        "declare_queues": _bool(env, "DECLARE_QUEUES", Settings.declare_queues),
        "fingerprint_key_file": _fingerprint_key_file(env),
    }


_IMAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]*")


def parse_shard_job_images(raw: str | None) -> dict[int, str]:
    """``SHARD=IMAGE`` pairs, comma-separated (``2=moonmind-codex/job:canary``)."""
    name = f"{ENV_PREFIX}SHARD_JOB_IMAGES"
    images: dict[int, str] = {}
    for item in (raw or "").split(","):
        if not item.strip():
            continue
        shard_text, sep, image = (part.strip() for part in item.partition("="))
        if not sep or not shard_text.isdigit() or not _IMAGE_NAME.fullmatch(image):
            raise SettingsError(
                f"{name}: {item.strip()!r:.120} is not SHARD=IMAGE; give comma-separated pairs "
                "such as '2=moonmind-codex/job:canary' (a shard number, an image name)"
            )
        shard = int(shard_text)
        if shard in images:
            raise SettingsError(f"{name}: shard {shard} is given twice; give each shard once")
        images[shard] = image
    return images


def _fingerprint_key_file(env: Mapping[str, str]) -> Path | None:
    """The key stays in its file: only the path is a setting."""
    if ENV_PREFIX + "FINGERPRINT_KEY" in env:
        raise SettingsError(
            f"{ENV_PREFIX}FINGERPRINT_KEY is not read: put the key in a file readable by the "
            f"workers only and set {ENV_PREFIX}FINGERPRINT_KEY_FILE to its path"
        )
    key = ENV_PREFIX + "FINGERPRINT_KEY_FILE"
    raw = (env.get(key) or "").strip()
    if not raw:
        return None
    if not raw.startswith("/"):
        raise SettingsError(f"{key}={raw!r:.200} must be an absolute path")
    return Path(raw)


def read_fence_key(path: Path | None) -> tuple[bytes, str] | str:
    """The fleet's login-fingerprint key and its id, read now from ``path``; or, without a
    usable key, why copied logins are not fenced (a sentence for the operator)."""
    if path is None:
        return (
            "MOONMIND_CODEX_FINGERPRINT_KEY_FILE is not set: copied logins are not fenced "
            "(see docs/runbook.md)"
        )
    try:
        key = fence.parse_key(path.read_bytes())
    except OSError as exc:
        return (
            f"the fingerprint key file {path} cannot be read ({exc.strerror}): copied "
            "logins are not fenced until it can"
        )
    except fence.FenceKeyError as exc:
        return f"{path}: {exc}: copied logins are not fenced until it holds a key"
    return key, fence.key_id(key)


def _database_url(env: Mapping[str, str]) -> str:
    url = _optional_str(env, "DATABASE_URL")
    legacy = _optional_str(env, "ASSIGNMENTS_DB")
    if url is not None and legacy is not None:
        raise SettingsError(
            f"set {ENV_PREFIX}DATABASE_URL only: {ENV_PREFIX}ASSIGNMENTS_DB is its old, "
            "SQLite-only form"
        )
    if legacy is not None:
        return f"sqlite:///{legacy}"
    return url if url is not None else Settings.database_url


def _validate(s: Settings) -> None:
    """Every rule, in the order an operator fixes them; the first broken one is raised."""
    _validate_names(s)
    _validate_ranges_and_urls(s)
    _validate_job_limits(s)
    _validate_transport(s)
    if not s.codex_task_patterns:
        raise SettingsError(
            f"{ENV_PREFIX}CODEX_TASK_PATTERNS is empty; give at least one glob pattern"
        )
    _validate_allowed_commands(s.allowed_commands)
    # After the allowlist itself: the keep-alive's command is checked against it.
    _validate_keepalive(s)


def _validate_names(s: Settings) -> None:
    """The volume, workspace and queue names the settings make."""
    p = ENV_PREFIX
    if "{shard}" not in s.auth_volume_template:
        raise SettingsError(
            f"{p}AUTH_VOLUME_TEMPLATE={s.auth_volume_template!r} must contain '{{shard}}' so each "
            "shard gets its own volume, e.g. 'codex_auth_{shard}'"
        )
    sample = s.auth_volume_template.replace("{shard}", "0")
    if not _VOLUME_NAME.fullmatch(sample):
        raise SettingsError(
            f"{p}AUTH_VOLUME_TEMPLATE={s.auth_volume_template!r} does not make a valid Docker "
            "volume name (letters, digits, '_', '.', '-')"
        )
    if s.auth_volume_override is not None and not _VOLUME_NAME.fullmatch(s.auth_volume_override):
        raise SettingsError(
            f"{p}AUTH_VOLUME={s.auth_volume_override!r} is not a valid Docker volume name "
            "(letters, digits, '_', '.', '-'; starting with a letter or digit)"
        )
    problem = prefix_problem(s.workspace_volume_prefix)
    if problem is not None:
        raise SettingsError(
            f"{p}WORKSPACE_VOLUME_PREFIX={s.workspace_volume_prefix!r} cannot start the run "
            f"workspace volumes' names: {problem}, e.g. '{DEFAULT_PREFIX}'"
        )
    for name, value in (("QUEUE_PREFIX", s.queue_prefix), ("DEFAULT_QUEUE", s.default_queue)):
        if not _QUEUE_NAME.fullmatch(value):
            raise SettingsError(f"{p}{name}={value!r} is not a valid queue name")
    if s.queue_prefix == s.default_queue:
        raise SettingsError(
            f"{p}QUEUE_PREFIX and {p}DEFAULT_QUEUE are both {s.default_queue!r}: Codex tasks "
            "must not share the default queue; pick another prefix"
        )


def _validate_ranges_and_urls(s: Settings) -> None:
    """The shard numbers against the shard count, and the broker's and store's URLs."""
    p = ENV_PREFIX
    if s.shard is not None and not 0 <= s.shard < s.shard_count:
        raise SettingsError(
            f"{p}SHARD={s.shard} is out of range for {p}SHARD_COUNT={s.shard_count}; "
            f"use a shard in 0..{s.shard_count - 1} or raise the shard count"
        )
    if not s.broker_url.startswith(
        ("amqp://", "amqps://", "pyamqp://", "redis://", "rediss://", "memory://")
    ):
        raise SettingsError(
            f"{p}BROKER_URL does not look like a broker URL (expected amqp://user:pass@host:5672//"
            " or redis://host:6379/0)"
        )
    if not s.database_url.startswith(("sqlite:///", "postgresql://", "postgresql+psycopg://")):
        raise SettingsError(
            f"{p}DATABASE_URL must be sqlite:///PATH (one host) or "
            "postgresql+psycopg://USER@HOST/DB (several hosts); put a password in the "
            f"{p}DATABASE_URL_FILE twin, not in the environment"
        )
    outside = sorted(n for n in s.shard_job_images if not 0 <= n < s.shard_count)
    if outside:
        raise SettingsError(
            f"{p}SHARD_JOB_IMAGES names shard {outside[0]}, out of range for "
            f"{p}SHARD_COUNT={s.shard_count}; use shards in 0..{s.shard_count - 1}"
        )


def _command(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """A command line, split as a POSIX shell would (quotes group words; nothing is run)."""
    raw = _optional_str(env, name)
    if raw is None:
        return default
    try:
        words = tuple(shlex.split(raw))
    except ValueError as exc:
        raise SettingsError(
            f"{ENV_PREFIX}{name}={raw!r:.200} cannot be split into words ({exc}); quote it "
            "as a shell would, e.g. codex exec --skip-git-repo-check 'Reply with OK.'"
        ) from None
    if not words or not words[0] or any("\0" in word for word in words):
        raise SettingsError(
            f"{ENV_PREFIX}{name}={raw!r:.200} is not a command; give one such as codex exec "
            "--skip-git-repo-check 'Reply with OK.'"
        )
    return words


def _validate_keepalive(s: Settings) -> None:
    """Keep-alive thresholds that must fit together, and a command the workers would run."""
    p = ENV_PREFIX
    if s.keepalive_stagger_minutes < 0:
        raise SettingsError(
            f"{p}KEEPALIVE_STAGGER_MINUTES={s.keepalive_stagger_minutes:g} must be >= 0 "
            "(0: every shard fires at its horizon)"
        )
    if s.keepalive_timeout_seconds >= s.keepalive_retry_hours * 3600:
        raise SettingsError(
            f"{p}KEEPALIVE_TIMEOUT_SECONDS={s.keepalive_timeout_seconds:g} must be shorter than "
            f"{p}KEEPALIVE_RETRY_HOURS={s.keepalive_retry_hours:g} (in seconds): a keep-alive "
            "still open after the retry interval is taken as lost"
        )
    if s.keepalive_enabled and not command_allowed(s.keepalive_command, s.allowed_commands):
        raise SettingsError(
            f"{p}KEEPALIVE_COMMAND starts with {s.keepalive_command[0]!r:.80}, which "
            f"{p}ALLOWED_COMMANDS does not allow: workers would refuse every keep-alive; "
            f"use a codex command, allow its first word, or set {p}KEEPALIVE_ENABLED=false"
        )


def _validate_transport(s: Settings) -> None:
    """TLS and signing settings that belong together (file contents are checked when used)."""
    p = ENV_PREFIX
    if s.broker_ca_path is not None and not s.broker_url.startswith(("amqps://", "rediss://")):
        raise SettingsError(
            f"{p}BROKER_CA_PATH is set but {p}BROKER_URL is not a TLS URL: use amqps://...:5671 "
            "so the CA is used, or unset the CA path"
        )
    signing = {
        "SIGNING_KEY_PATH": s.signing_key_path,
        "SIGNING_CERT_PATH": s.signing_cert_path,
        "SIGNING_TRUST_DIR": s.signing_trust_dir,
    }
    given = [name for name, value in signing.items() if value is not None]
    if given and len(given) != len(signing):
        missing = [name for name in signing if name not in given]
        raise SettingsError(
            f"message signing needs all of {', '.join(p + n for n in signing)}; "
            f"{', '.join(p + n for n in missing)} not set (set all three, or none for unsigned "
            "messages)"
        )


def _validate_job_limits(s: Settings) -> None:
    """CPU weight and hard limits of job-image containers (0: the engine's default)."""
    if s.job_cpu_shares != 0 and not MIN_CPU_SHARES <= s.job_cpu_shares <= MAX_CPU_SHARES:
        raise SettingsError(
            f"{ENV_PREFIX}JOB_CPU_SHARES={s.job_cpu_shares} is out of range: use {MIN_CPU_SHARES}.."
            f"{MAX_CPU_SHARES} (the engine's default weight is 1024; lower runs Codex containers "
            "after the fleet's own processes when the CPU is busy), or 0 for the engine's default"
        )
    for name, value, least in (
        ("JOB_MEMORY_MB", s.job_memory_mb, MIN_JOB_MEMORY_MB),
        ("JOB_PIDS_LIMIT", s.job_pids_limit, MIN_JOB_PIDS),
    ):
        if value != 0 and value < least:
            raise SettingsError(
                f"{ENV_PREFIX}{name}={value} is too small for a Codex job (node, git, the "
                f"CLI): use at least {least}, or 0 for no limit"
            )
    if s.job_cpuset is not None and not _cpu_list_ok(s.job_cpuset):
        raise SettingsError(
            f"{ENV_PREFIX}JOB_CPUSET={s.job_cpuset!r} is not a list of cores: use numbers and "
            "ranges as docker --cpuset-cpus takes them, e.g. 1-3 or 1,3 (unset: any core)"
        )
    if s.job_cpus != 0 and not MIN_JOB_CPUS <= s.job_cpus <= MAX_JOB_CPUS:
        raise SettingsError(
            f"{ENV_PREFIX}JOB_CPUS={s.job_cpus:g} is out of range: use "
            f"{MIN_JOB_CPUS}..{MAX_JOB_CPUS:g} cores (docker run --cpus), or 0 for no cap"
        )


def _cpu_list_ok(cpus: str) -> bool:
    if not _CPU_LIST.fullmatch(cpus):
        return False
    for part in cpus.split(","):
        first, _, last = part.partition("-")
        if last and int(last) < int(first):
            return False
    return True


def _validate_allowed_commands(allowed: tuple[str, ...]) -> None:
    name = f"{ENV_PREFIX}ALLOWED_COMMANDS"
    if not allowed:
        raise SettingsError(
            f"{name} is empty: give the commands Codex phases may run, e.g. codex,specify,git"
        )
    for command in allowed:
        if command == ANY_COMMAND:
            continue
        if any(c.isspace() or c in "*?[]" for c in command) or (
            "/" in command and not command.startswith("/")
        ):
            raise SettingsError(
                f"{name} entry {command!r} is not a command name (codex) or an absolute path "
                f"(/opt/tools/run); separate entries with commas; {ANY_COMMAND} alone allows any"
            )
