"""The pre-flight probe: runs inside a job-image container with the auth volume mounted.

Standard library only (the job image has no third-party Python packages). It gathers what
``codex login status`` does not check (ownership, modes, writability, token expiry) and runs
that real command, then prints ONE JSON object and exits 0 whatever it found: judging the
result is the worker's job (``preflight_eval``). Nothing secret is printed: the auth file goes
through :func:`moonmind_codex.core.authfile.inspect_auth_json`, and the CLI's output is reduced to a
known phrase, because ``codex login status`` echoes part of an API key.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from moonmind_codex.core.authfile import inspect_auth_json
from moonmind_codex.core.probe_report import AUTH_FILE_NAME, PROBE_VERSION, STATUS_UNVERIFIED

STATUS_TIMEOUT_SECONDS = 20.0
# The CLI's system-managed layer: it outranks the Codex home's and a repository's config.toml.
MANAGED_CONFIG = Path("/etc/codex/managed_config.toml")
STORE_SETTING = "cli_auth_credentials_store"

# Known first lines of `codex login status`; anything else is reported as unrecognised.
_KNOWN_STATUS = (
    ("logged in using chatgpt", "Logged in using ChatGPT"),
    # `codex login --with-access-token`: an Agent Identity JWT, or a personal access token.
    ("logged in using access token", "Logged in using an access token"),
    ("logged in using personal access token", "Logged in using a personal access token"),
    # The CLI checks an access-token login online even for `login status`; offline it fails
    # with "failed to request agent identity JWKS" (or "personal access token metadata").
    ("failed to request agent identity jwks", STATUS_UNVERIFIED),
    ("failed to request personal access token metadata", STATUS_UNVERIFIED),
    ("logged in using an api key", "Logged in using an API key"),
    ("api key configured", "Logged in using an API key"),
    ("not logged in", "Not logged in"),
)


def codex_home() -> Path:
    explicit = os.environ.get("CODEX_HOME")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("HOME", "/home/app")) / ".codex"


def _stat(path: Path) -> dict[str, Any]:
    try:
        info = path.stat()
    except FileNotFoundError:
        return {"exists": False}
    except PermissionError:
        return {"exists": None, "error": "permission denied"}
    except OSError as exc:
        return {"exists": None, "error": exc.strerror or type(exc).__name__}
    return {
        "exists": True,
        "mode": f"{stat.S_IMODE(info.st_mode):04o}",
        "uid": info.st_uid,
        "gid": info.st_gid,
        "size": info.st_size,
        "is_dir": stat.S_ISDIR(info.st_mode),
    }


# subprocess and tomllib are imported where used: the job image's pre-flight imports this module
# at every job start, and most starts need neither (the CLI's verdict cached, no config file).


def _write_test(directory: Path) -> tuple[bool, str | None]:
    """Can this uid create a file where the CLI writes refreshed tokens and session state?"""
    name = directory / f".moonmind-codex-probe-{os.getpid()}-{time.monotonic_ns()}"
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except PermissionError:
        return False, "permission denied"
    except OSError as exc:
        return False, exc.strerror or type(exc).__name__
    os.close(fd)
    try:
        os.unlink(name)
    except OSError as exc:
        return False, f"created a file but cannot remove it ({exc.strerror})"
    return True, None


def summarise_status_output(output: str) -> str:
    """Reduce ``codex login status`` output to a fixed phrase (its text may contain a key)."""
    lowered = output.lower()
    for needle, phrase in _KNOWN_STATUS:
        if needle in lowered:
            return phrase
    return "unrecognised output" if output.strip() else "no output"


def run_codex_status(timeout_s: float = STATUS_TIMEOUT_SECONDS) -> dict[str, Any]:
    import subprocess

    started = time.monotonic()
    try:
        done = subprocess.run(
            ["codex", "login", "status"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        return {
            "exit_code": None,
            "summary": "codex CLI not found",
            "duration_s": 0.0,
            "error": "codex binary is not on PATH",
        }
    except subprocess.TimeoutExpired:
        return {
            "exit_code": None,
            "summary": "timed out",
            "duration_s": round(time.monotonic() - started, 3),
            "error": f"codex login status did not finish within {timeout_s} s",
        }
    return {
        "exit_code": done.returncode,
        "summary": summarise_status_output(done.stdout + "\n" + done.stderr),
        "duration_s": round(time.monotonic() - started, 3),
        "error": None,
    }


def _store_layer(path: Path) -> dict[str, Any]:
    """What one config file says about the credential store (never any other content)."""
    layer: dict[str, Any] = {"path": str(path)}
    try:
        info = path.stat()
        raw = path.read_bytes()
    except FileNotFoundError:
        return {**layer, "exists": False}
    except OSError as exc:
        return {**layer, "exists": None, "error": exc.strerror or type(exc).__name__}
    # Root's and not writable by anyone else: no job (uid 1000) can change it.
    layer.update(exists=True, root_owned=info.st_uid == 0 and not info.st_mode & 0o022)
    import tomllib

    try:
        value = tomllib.loads(raw.decode("utf-8")).get(STORE_SETTING)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {**layer, "error": "not valid TOML"}
    return {**layer, "value": value if isinstance(value, str) else None}


def credential_store(home: Path, project: Path | None) -> dict[str, Any]:
    """Where the CLI keeps this login: the effective ``cli_auth_credentials_store``.

    Layers from lowest to highest precedence: the built-in default (``file``), the Codex
    home's ``config.toml``, the run's repository ``.codex/config.toml``, the managed config.
    """
    layers = [_store_layer(home / "config.toml")]
    if project is not None:
        layers.append(_store_layer(project / ".codex" / "config.toml"))
    managed = _store_layer(MANAGED_CONFIG)
    layers.append(managed)
    effective, source = "file", "default"
    for layer in layers:
        if layer.get("value"):
            effective, source = layer["value"], layer["path"]
    pinned = bool(managed.get("root_owned")) and managed.get("value") == "file"
    return {"effective": effective, "source": source, "pinned": pinned, "layers": layers}


def auth_digest(content: bytes | None) -> str | None:
    """SHA-256 of auth.json's bytes: says whether the login changed, and cannot be undone."""
    return None if content is None else hashlib.sha256(content).hexdigest()


def gather(
    home: Path, now: datetime, run_status: bool = True, project: Path | None = None
) -> dict[str, Any]:
    """Everything the worker needs to judge the login, with no secret in it.

    ``project``: the run's working directory, whose ``.codex/config.toml`` the CLI also reads.
    """
    dir_info = _stat(home)
    if dir_info.get("exists"):
        writable, write_error = _write_test(home)
        dir_info.update({"writable": writable, "write_error": write_error})
    auth_path = home / AUTH_FILE_NAME
    file_info = _stat(auth_path)
    inspection: dict[str, Any] | None = None
    digest: str | None = None
    if file_info.get("exists"):
        try:
            raw = auth_path.read_bytes()
        except PermissionError:
            file_info["readable"] = False
            file_info["error"] = "permission denied"
        except OSError as exc:
            file_info["readable"] = False
            file_info["error"] = exc.strerror or type(exc).__name__
        else:
            file_info["readable"] = True
            inspection = inspect_auth_json(raw, now).to_dict()
            digest = auth_digest(raw)
            del raw
    return {
        "probe_version": PROBE_VERSION,
        "codex_home": str(home),
        "uid": os.getuid(),
        "gid": os.getgid(),
        "checked_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "dir": dir_info,
        "auth_file": file_info,
        "inspection": inspection,
        # Which login this is (a fence or quarantine names the one it judged), not the login.
        "auth_digest": digest,
        "credential_store": credential_store(home, project),
        "codex_status": run_codex_status() if run_status else None,
    }


def main() -> int:
    print(json.dumps(gather(codex_home(), datetime.now(UTC)), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
