"""Systemd + Docker host containers (the Molecule host image), for playbook tests and benchmarks.

Unprivileged: the capabilities and mounts below are what systemd as PID 1 and a nested Docker
engine need without ``--privileged`` (see images/host/Dockerfile); molecule/default/create.yml
starts its hosts with the same.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HOST_IMAGE = "moonmind-codex/host:latest"
_ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")
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


def start_host(name: str, timeout_s: float = 90) -> None:
    """Boot a host container named ``name`` and wait until its own Docker engine answers."""
    remove_host(name)
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
        HOST_IMAGE,
    )
    docker("exec", name, "systemctl", "is-system-running", "--wait", check=False)
    deadline = time.monotonic() + timeout_s
    while docker("exec", name, "docker", "info", check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Docker engine of host {name} did not start")
        time.sleep(1)


def remove_host(name: str) -> None:
    """The host container and its engine's data volume."""
    docker("rm", "-f", name, check=False)
    docker("volume", "rm", "-f", f"{name}-docker", check=False)


def ansible_playbook(
    inventory: Path,
    playbook: Path,
    *args: str,
    timeout_s: float = 600,
    extra_env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``ansible-playbook`` from this venv with the project's ansible.cfg and roles."""
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_ROLES_PATH=str(REPO / "roles"),
        ANSIBLE_NOCOLOR="1",
        **(extra_env or {}),
    )
    return subprocess.run(
        [_ANSIBLE_PLAYBOOK, "-i", str(inventory), str(playbook), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=timeout_s,
        check=False,
    )
