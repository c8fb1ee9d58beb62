"""Systemd + Docker host containers (the Molecule host image), for playbook tests and benchmarks.

Unprivileged: the capabilities and mounts below are what systemd as PID 1 and a nested Docker
engine need without ``--privileged`` (see images/host/Dockerfile); molecule/default/create.yml
starts its hosts with the same.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final

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


def _run_host(name: str, *image_and_command: str) -> None:
    remove_host(name)
    docker(
        "run", "-d", "--name", name, "--hostname", name, *HOST_FLAGS,
        "-v", f"{name}-docker:/var/lib/docker", *image_and_command,
    )  # fmt: skip


def _wait_for_engine(name: str, timeout_s: float, log: str | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while docker("exec", name, "docker", "info", check=False).returncode != 0:
        if time.monotonic() > deadline:
            detail = ""
            if log is not None:
                detail = ": " + docker("exec", name, "tail", "-20", log, check=False).stdout
            raise RuntimeError(f"the Docker engine of host {name} did not start{detail}")
        time.sleep(1)


def start_host(name: str, timeout_s: float = 90) -> None:
    """Boot a host container named ``name`` and wait until its own Docker engine answers."""
    _run_host(name, HOST_IMAGE)
    docker("exec", name, "systemctl", "is-system-running", "--wait", check=False)
    _wait_for_engine(name, timeout_s)


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


def start_host_without_systemd(name: str, timeout_s: float = 90) -> None:
    """A host container whose PID 1 is not systemd (``sleep``), with dockerd started by hand.

    The same image and capabilities as :func:`start_host`; Ansible's ``ansible_service_mgr`` is
    then ``sleep``, so the roles take their Docker restart-policy path. dockerd runs as the
    platform notes say for such machines (and as the docker role starts it there).
    """
    _run_host(name, "--entrypoint", "sleep", HOST_IMAGE, "infinity")
    docker("exec", "-d", name, "sh", "-c", "exec dockerd >/var/log/dockerd.log 2>&1")
    _wait_for_engine(name, timeout_s, log="/var/log/dockerd.log")


# How the controller reaches a host container: through the outer engine, as root inside it.
HOST_CONNECTION: Final[dict[str, object]] = {
    "ansible_connection": "community.docker.docker",
    "ansible_become": False,
    "ansible_python_interpreter": "/usr/bin/python3",
}


def hosts_inventory(hosts: Sequence[str], **host_vars: object) -> dict[str, object]:
    """An inventory of ``hosts`` in no group (playbooks that apply single roles)."""
    return {"all": {"vars": {**HOST_CONNECTION, **host_vars}, "hosts": {h: {} for h in hosts}}}


def fleet_inventory_of(
    workers: Mapping[str, Sequence[int]], broker: str, shard_count: int, **fleet_vars: object
) -> dict[str, object]:
    """A fleet's inventory: each worker host with its shards, and the broker host."""
    return {
        "all": {
            "vars": {**HOST_CONNECTION, "moonmind_codex_shard_count": shard_count, **fleet_vars},
            "children": {
                "codex_workers": {
                    "hosts": {h: {"moonmind_codex_shards": list(s)} for h, s in workers.items()}
                },
                "codex_broker": {"hosts": {broker: {}}},
            },
        }
    }


def fleet_inventory(
    host: str, shards: list[int], shard_count: int, **fleet_vars: object
) -> dict[str, object]:
    """An inventory of one host that is both the broker and the worker host of ``shards``."""
    return fleet_inventory_of(
        {host: shards},
        host,
        shard_count,
        **{"moonmind_codex_broker_bind_address": "127.0.0.1", **fleet_vars},
    )


def write_inventory(path: Path, inventory: Mapping[str, object]) -> Path:
    """``inventory`` as ``path`` (JSON is YAML, and Ansible reads it as such)."""
    path.write_text(json.dumps(inventory))
    return path


def recap_changed(output: str) -> int:
    """The sum of ``changed=`` over the PLAY RECAP of an ansible-playbook output."""
    found = re.findall(r"changed=(\d+)", output.rsplit("PLAY RECAP", maxsplit=1)[-1])
    if not found:
        raise AssertionError(f"no PLAY RECAP in the output: {output[-2000:]}")
    return sum(int(n) for n in found)


def wait_until(
    condition: Callable[[], object], what: str, timeout_s: float = 120, every_s: float = 0.5
) -> None:
    """Poll ``condition`` until it is truthy; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)


def unit_properties(host: str, unit: str, *names: str) -> dict[str, str]:
    """``systemctl show`` of ``unit`` on ``host``: the properties ``names``."""
    out = docker("exec", host, "systemctl", "show", f"--property={','.join(names)}", unit).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def queue_consumers(host: str, broker: str = "moonmind-codex-broker") -> dict[str, int]:
    """Consumers of each queue of the fleet's RabbitMQ on ``host`` ({} while it starts)."""
    listed = docker(
        "exec", host, "docker", "exec", broker,
        "rabbitmqctl", "-q", "list_queues", "name", "consumers",
        check=False,
    )  # fmt: skip
    if listed.returncode != 0:
        return {}
    rows = (line.split() for line in listed.stdout.splitlines())
    return {row[0]: int(row[1]) for row in rows if len(row) == 2 and row[1].isdigit()}
