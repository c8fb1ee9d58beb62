"""Signing an auth volume in with a test API key, through the real Codex CLI in the job image.

`codex login --with-api-key` does not check the key online, so a fake key gives a volume in
the state a real API-key login leaves (``auth.json``, 0600, owned by the job uid).
"""

from __future__ import annotations

import subprocess

JOB_IMAGE = "moonmind-codex/job:latest"
CODEX_HOME = "/home/app/.codex"
FAKE_API_KEY = "sk-test-NOT-A-REAL-KEY-0000"


def run_in_volume(
    volume: str, script: str, *, user: str = "1000:1000", stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """A throw-away job-image container with ``volume`` at /home/app/.codex (no lock taken)."""
    return subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "-i",
            "--network",
            "none",
            "--user",
            user,
            "--entrypoint",
            "sh",
            "-v",
            f"{volume}:{CODEX_HOME}",
            JOB_IMAGE,
            "-c",
            script,
        ],
        input=stdin,
        capture_output=True,
        check=False,
        timeout=120,
    )


def api_key_login(volume: str) -> None:
    """A real `codex login --with-api-key`, the key on stdin (it is not checked online)."""
    done = run_in_volume(volume, "codex login --with-api-key", stdin=FAKE_API_KEY.encode())
    if done.returncode != 0:
        raise RuntimeError(
            f"codex login --with-api-key into volume {volume} failed "
            f"(exit {done.returncode}): {done.stderr.decode('utf-8', 'replace')}"
        )
