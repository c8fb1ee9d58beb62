"""``load_settings``: every variable parsed into its field (in groups), unknown names refused,
then the rules checked."""

from __future__ import annotations

import re
import shlex
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from moonmind_codex.settings.model import (
    ENV_PREFIX,
    MAX_ID,
    NON_RUNTIME_NAMES,
    Settings,
    SettingsError,
)
from moonmind_codex.settings.rules import (
    validate,
)
from moonmind_codex.settings.sources import (
    bool_value,
    float_value,
    int_value,
    optional_path,
    optional_str,
    process_environment,
    read_value,
    str_value,
)


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
    shard_raw = read_value(env, "SHARD")
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
    mode = str_value(env, "QUEUE_MODE", "sharded")
    if mode not in ("sharded", "single"):
        raise SettingsError(
            f"{ENV_PREFIX}QUEUE_MODE={mode!r} is not valid; use 'sharded' (one codex-N queue "
            "per shard, the default) or 'single' (one shared 'codex' queue)"
        )
    return mode


def _comma_list(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """A comma-separated list (blank items dropped), or ``default`` when the variable is unset."""
    raw = optional_str(env, name)
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
    validate(settings)
    return settings


def _fleet_fields(env: Mapping[str, str]) -> dict[str, Any]:
    """Shards, queues, volumes and routing."""
    return {
        "shard_count": int_value(env, "SHARD_COUNT", Settings.shard_count, 1),
        "queue_mode": _queue_mode(env),
        "queue_prefix": str_value(env, "QUEUE_PREFIX", Settings.queue_prefix),
        "default_queue": str_value(env, "DEFAULT_QUEUE", Settings.default_queue),
        "shard": _shard(env),
        "auth_volume_template": str_value(
            env, "AUTH_VOLUME_TEMPLATE", Settings.auth_volume_template
        ),
        "auth_volume_override": optional_str(env, "AUTH_VOLUME"),
        "host_name": str_value(env, "HOST_NAME", socket.gethostname()),
        "codex_task_patterns": _comma_list(
            env, "CODEX_TASK_PATTERNS", Settings.codex_task_patterns
        ),
        "failover": bool_value(env, "FAILOVER", Settings.failover),
    }


def _job_fields(env: Mapping[str, str]) -> dict[str, Any]:
    """The job containers and their limits, a phase's timeouts and retries, and where runs keep
    their files."""
    return {
        "job_image": str_value(env, "JOB_IMAGE", Settings.job_image),
        "shard_job_images": parse_shard_job_images(optional_str(env, "SHARD_JOB_IMAGES")),
        "job_uid": int_value(env, "JOB_UID", Settings.job_uid, 1, MAX_ID),
        "job_gid": int_value(env, "JOB_GID", Settings.job_gid, 1, MAX_ID),
        "job_timeout_seconds": float_value(
            env, "JOB_TIMEOUT_SECONDS", Settings.job_timeout_seconds, 0
        ),
        "job_network": str_value(env, "JOB_NETWORK", Settings.job_network),
        "job_cpu_shares": int_value(env, "JOB_CPU_SHARES", Settings.job_cpu_shares, 0),
        "job_memory_mb": int_value(env, "JOB_MEMORY_MB", Settings.job_memory_mb, 0),
        "job_pids_limit": int_value(env, "JOB_PIDS_LIMIT", Settings.job_pids_limit, 0),
        # 0 (no cap) is allowed here; the range check names the valid values.
        "job_cpus": float_value(env, "JOB_CPUS", Settings.job_cpus, -1),
        "job_cpuset": optional_str(env, "JOB_CPUSET"),
        "preflight_timeout_seconds": float_value(
            env, "PREFLIGHT_TIMEOUT_SECONDS", Settings.preflight_timeout_seconds, 0
        ),
        "busy_retry_seconds": float_value(
            env, "BUSY_RETRY_SECONDS", Settings.busy_retry_seconds, 0
        ),
        "busy_max_retries": int_value(env, "BUSY_MAX_RETRIES", Settings.busy_max_retries, 0),
        "last_refresh_warn_days": float_value(
            env, "LAST_REFRESH_WARN_DAYS", Settings.last_refresh_warn_days, 0
        ),
        "workspace_volume_prefix": str_value(
            env, "WORKSPACE_VOLUME_PREFIX", Settings.workspace_volume_prefix
        ),
        "artifacts_dir": Path(str_value(env, "ARTIFACTS_DIR", str(Settings.artifacts_dir))),
        "allowed_commands": _comma_list(env, "ALLOWED_COMMANDS", Settings.allowed_commands),
    }


def _keepalive_fields(env: Mapping[str, str]) -> dict[str, Any]:
    """The keep-alive of each shard's login."""
    return {
        "keepalive_enabled": bool_value(env, "KEEPALIVE_ENABLED", Settings.keepalive_enabled),
        "keepalive_command": _command(env, "KEEPALIVE_COMMAND", Settings.keepalive_command),
        "keepalive_after_days": float_value(
            env, "KEEPALIVE_AFTER_DAYS", Settings.keepalive_after_days, 0
        ),
        "keepalive_idle_minutes": float_value(
            env, "KEEPALIVE_IDLE_MINUTES", Settings.keepalive_idle_minutes, 0
        ),
        "keepalive_retry_hours": float_value(
            env, "KEEPALIVE_RETRY_HOURS", Settings.keepalive_retry_hours, 0
        ),
        # 0 (no stagger) is allowed here; the range check says so.
        "keepalive_stagger_minutes": float_value(
            env, "KEEPALIVE_STAGGER_MINUTES", Settings.keepalive_stagger_minutes, -1
        ),
        "keepalive_check_seconds": float_value(
            env, "KEEPALIVE_CHECK_SECONDS", Settings.keepalive_check_seconds, 0
        ),
        "keepalive_timeout_seconds": float_value(
            env, "KEEPALIVE_TIMEOUT_SECONDS", Settings.keepalive_timeout_seconds, 0
        ),
    }


def _transport_fields(env: Mapping[str, str]) -> dict[str, Any]:
    """The broker, the run store, the engine, signing, fencing and the audit log."""
    audit_raw = optional_str(env, "AUDIT_LOG")
    return {
        "broker_url": str_value(env, "BROKER_URL", Settings.broker_url),
        "audit_log": Path(audit_raw) if audit_raw is not None else None,
        "database_url": _database_url(env),
        "worker_container": optional_str(env, "WORKER_CONTAINER"),
        "docker_url": optional_str(env, "DOCKER_URL"),
        "broker_ca_path": optional_path(env, "BROKER_CA_PATH"),
        "signing_key_path": optional_path(env, "SIGNING_KEY_PATH"),
        "signing_cert_path": optional_path(env, "SIGNING_CERT_PATH"),
        "signing_trust_dir": optional_path(env, "SIGNING_TRUST_DIR"),
        "signed_message_ttl_seconds": float_value(
            env, "SIGNED_MESSAGE_TTL_SECONDS", Settings.signed_message_ttl_seconds, 0
        ),
        "remote_control": bool_value(env, "REMOTE_CONTROL", Settings.remote_control),
        "declare_queues": bool_value(env, "DECLARE_QUEUES", Settings.declare_queues),
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


def _database_url(env: Mapping[str, str]) -> str:
    url = optional_str(env, "DATABASE_URL")
    legacy = optional_str(env, "ASSIGNMENTS_DB")
    if url is not None and legacy is not None:
        raise SettingsError(
            f"set {ENV_PREFIX}DATABASE_URL only: {ENV_PREFIX}ASSIGNMENTS_DB is its old, "
            "SQLite-only form"
        )
    if legacy is not None:
        return f"sqlite:///{legacy}"
    return url if url is not None else Settings.database_url


def _command(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """A command line, split as a POSIX shell would (quotes group words; nothing is run)."""
    raw = optional_str(env, name)
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
