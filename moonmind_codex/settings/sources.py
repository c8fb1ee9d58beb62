"""Where a setting's value comes from: a ``MOONMIND_CODEX_*`` variable or the file its ``_FILE``
twin names, the host's rendered ``fleet.env`` under the process environment, and the fleet's
fingerprint key file; each read refuses what it cannot use, naming the variable."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

from moonmind_codex.core import fence
from moonmind_codex.core.messages import unreadable_reason
from moonmind_codex.settings.model import (
    DEFAULT_ENV_FILE,
    ENV_PREFIX,
    MAX_SETTING_FILE_BYTES,
    SettingsError,
)


def read_value(env: Mapping[str, str], name: str) -> str | None:
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
            raise SettingsError(
                f"{file_key}={env[file_key]!r:.200} cannot be read ({unreadable_reason(exc)}); "
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


def int_value(
    env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int | None = None
) -> int:
    raw = read_value(env, name)
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


def float_value(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    raw = read_value(env, name)
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


def str_value(env: Mapping[str, str], name: str, default: str) -> str:
    raw = read_value(env, name)
    return default if raw is None or raw == "" else raw


def optional_str(env: Mapping[str, str], name: str) -> str | None:
    raw = read_value(env, name)
    return None if raw is None or raw == "" else raw


def optional_path(env: Mapping[str, str], name: str) -> Path | None:
    raw = optional_str(env, name)
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


def bool_value(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = optional_str(env, name)
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
