"""The pre-flight probe: runs inside a job-image container with the auth volume mounted.

Standard library only (the job image has no third-party Python packages). It gathers what
``codex login status`` does not check (ownership, modes, writability, token expiry) and runs
that real command, then prints ONE JSON object and exits 0 whatever it found: judging the
result is the worker's job (``preflight_eval``). Nothing secret is printed: the auth file goes
through :func:`moonmind_codex.authfile.inspect_auth_json`, and the CLI's output is reduced to a
known phrase, because ``codex login status`` echoes part of an API key.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from moonmind_codex.authfile import inspect_auth_json

PROBE_VERSION = 1
AUTH_FILE_NAME = "auth.json"
STATUS_TIMEOUT_SECONDS = 20.0

# Known first lines of `codex login status`; anything else is reported as unrecognised.
_KNOWN_STATUS = (
    ("logged in using chatgpt", "Logged in using ChatGPT"),
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


def _write_test(directory: Path) -> tuple[bool, str | None]:
    """Can this uid create a file where the CLI writes refreshed tokens and session state?"""
    try:
        fd, name = tempfile.mkstemp(prefix=".moonmind-codex-probe-", dir=directory)
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


def gather(home: Path, now: datetime, run_status: bool = True) -> dict[str, Any]:
    """Everything the worker needs to judge the login, with no secret in it."""
    dir_info = _stat(home)
    if dir_info.get("exists"):
        writable, write_error = _write_test(home)
        dir_info.update({"writable": writable, "write_error": write_error})
    auth_path = home / AUTH_FILE_NAME
    file_info = _stat(auth_path)
    inspection: dict[str, Any] | None = None
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
        "codex_status": run_codex_status() if run_status else None,
    }


def main() -> int:
    print(json.dumps(gather(codex_home(), datetime.now(UTC)), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
