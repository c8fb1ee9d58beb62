"""Fresh systemd + Docker hosts (the Molecule host image) for playbook tests."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HOST_FLAGS = [
    "--cap-add",
    "SYS_ADMIN",
    "--cap-add",
    "NET_ADMIN",
    "--cap-add",
    "SYS_PTRACE",
    "--cap-add",
    "MKNOD",
    "--cap-add",
    "SYS_MODULE",
    "--security-opt",
    "seccomp=unconfined",
    "--security-opt",
    "apparmor=unconfined",
    "--cgroupns=host",
    "--tmpfs",
    "/run",
    "--tmpfs",
    "/run/lock",
    "-v",
    "/sys/fs/cgroup:/sys/fs/cgroup:rw",
    "--stop-signal",
    "SIGRTMIN+3",
]


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=check, timeout=300
    )


@pytest.fixture
def fresh_host() -> Iterator[str]:
    name = f"mmc-test-fresh-{secrets.token_hex(3)}"
    docker(
        "run",
        "-d",
        "--name",
        name,
        "--hostname",
        name,
        *HOST_FLAGS,
        "-v",
        f"{name}-docker:/var/lib/docker",
        "moonmind-codex/host:latest",
    )
    try:
        docker("exec", name, "systemctl", "is-system-running", "--wait", check=False)
        deadline = time.monotonic() + 90
        while docker("exec", name, "docker", "info", check=False).returncode != 0:
            assert time.monotonic() < deadline, "the host's Docker engine did not start"
            time.sleep(1)
        yield name
    finally:
        docker("rm", "-f", name, check=False)
        docker("volume", "rm", "-f", f"{name}-docker", check=False)
