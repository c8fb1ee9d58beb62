"""The rules the settings must keep together (names, ranges, URLs, job limits, transport,
the command allowlist, the keep-alive); the first one broken is raised with its fix."""

from __future__ import annotations

import re

from moonmind_codex.core.policy import ANY_COMMAND, command_allowed
from moonmind_codex.core.workspace import DEFAULT_PREFIX, prefix_problem
from moonmind_codex.settings.model import (
    ENV_PREFIX,
    MAX_CPU_SHARES,
    MAX_JOB_CPUS,
    MIN_CPU_SHARES,
    MIN_JOB_CPUS,
    MIN_JOB_MEMORY_MB,
    MIN_JOB_PIDS,
    Settings,
    SettingsError,
)

_VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


_QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")


_CPU_LIST = re.compile(r"\d{1,4}(-\d{1,4})?(,\d{1,4}(-\d{1,4})?)*")


def validate(s: Settings) -> None:
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
