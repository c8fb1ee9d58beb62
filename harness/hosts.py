"""Systemd + Docker host containers (the Molecule host image), for playbook tests and benchmarks.

Unprivileged: the capabilities and mounts below are what systemd as PID 1 and a nested Docker
engine need without ``--privileged`` (see images/host/Dockerfile); molecule/default/create.yml
starts its hosts with the same.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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


def _run_host(name: str, *image_and_command: str, images: Sequence[str] = ()) -> None:
    remove_host(name)
    if images:
        seed_engine(name, images)
    docker(
        "run", "-d", "--name", name, "--hostname", name, *HOST_FLAGS,
        "-v", f"{name}-docker:/var/lib/docker", *image_and_command,
    )  # fmt: skip


# --- One image store for every host: loaded once, copied into each new host's engine ---
# Loading the worker, job and broker images into a host's engine (docker save | docker load)
# took about 80 s a host on the 2-core machine; copying an engine directory that already holds
# them takes about 16 s. The store is keyed by the images' ids, so a rebuilt image makes a new
# one (and the old one is removed).
SEED_PREFIX = "mmc-test-seed-"
_SEED_DONE = ".moonmind-codex-seed-complete"
_SEED_LOCK = REPO / "var" / "ci" / "image-seed.lock"


def image_id(image: str, host: str | None = None) -> str:
    """The id of ``image`` in this machine's engine, or in ``host``'s ("" when absent)."""
    inner = ["exec", host, "docker"] if host else []
    done = docker(*inner, "image", "inspect", "--format", "{{.Id}}", image, check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


def load_images(host: str, *names: str) -> None:
    """The project's ``names`` images in ``host``'s engine (loaded unless already the same)."""
    for name in names:
        image = f"moonmind-codex/{name}:latest"
        if image_id(image, host) == image_id(image):
            continue
        with subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE) as save:
            subprocess.run(
                ["docker", "exec", "-i", host, "docker", "load", "-q"],
                stdin=save.stdout,
                check=True,
                capture_output=True,
                timeout=600,
            )
        if save.returncode != 0:
            raise RuntimeError(f"docker save {image} failed with exit code {save.returncode}")


@contextlib.contextmanager
def _seed_lock() -> Iterator[None]:
    _SEED_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with _SEED_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _in_volume(volume: str, script: str, *mounts: str) -> subprocess.CompletedProcess[str]:
    """``sh -c script`` in a throw-away container with ``volume`` at /v (and ``mounts``)."""
    extra = [arg for mount in mounts for arg in ("-v", mount)]
    return docker(
        "run", "--rm", "-v", f"{volume}:/v", *extra, "--entrypoint", "sh", HOST_IMAGE,
        "-c", script, check=False,
    )  # fmt: skip


# Every host that starts with images gets all of these (one store, not one per combination).
SEED_IMAGES = ("worker", "job", "broker")


def image_seed() -> str:
    """A volume holding a stopped host engine's data with the images :data:`SEED_IMAGES`."""
    ids = sorted(f"{n}={image_id(f'moonmind-codex/{n}:latest')}" for n in SEED_IMAGES)
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:12]
    builder = f"{SEED_PREFIX}{digest}"
    volume = f"{builder}-docker"
    with _seed_lock():
        if _in_volume(volume, f"test -f /v/{_SEED_DONE}").returncode == 0:
            return volume
        start_host(builder)
        try:
            load_images(builder, *SEED_IMAGES)
            docker("stop", builder)  # systemd stops the engine cleanly: its data is whole
            docker("rm", builder)
            marked = _in_volume(volume, f"touch /v/{_SEED_DONE}")
            if marked.returncode != 0:
                raise RuntimeError(f"could not mark the image store {volume}: {marked.stderr}")
        except BaseException:
            remove_host(builder)
            raise
        listed = docker("volume", "ls", "-q", "--filter", f"name={SEED_PREFIX}").stdout.split()
        for stale in set(listed) - {volume}:
            docker("volume", "rm", "-f", stale, check=False)
    return volume


def seed_engine(name: str, images: Sequence[str] = SEED_IMAGES) -> None:
    """``name``'s engine volume, made a copy of the image store (which holds ``images``)."""
    missing = set(images) - set(SEED_IMAGES)
    if missing:
        raise ValueError(f"the image store holds {SEED_IMAGES}, not {sorted(missing)}")
    seed = image_seed()
    copied = _in_volume(
        f"{name}-docker", f"cp -a /seed/. /v/ && rm -f /v/{_SEED_DONE}", f"{seed}:/seed:ro"
    )
    if copied.returncode != 0:
        raise RuntimeError(f"could not seed the engine of host {name}: {copied.stderr[-500:]}")


def _wait_for_engine(name: str, timeout_s: float, log: str | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while docker("exec", name, "docker", "info", check=False).returncode != 0:
        if time.monotonic() > deadline:
            detail = ""
            if log is not None:
                detail = ": " + docker("exec", name, "tail", "-20", log, check=False).stdout
            raise RuntimeError(f"the Docker engine of host {name} did not start{detail}")
        time.sleep(1)


def start_host(name: str, timeout_s: float = 90, images: Sequence[str] = ()) -> None:
    """Boot a host container named ``name`` and wait until its own Docker engine answers.

    ``images``: the project's images (``worker``, ``job``, ...) its engine starts with, copied
    from the shared image store rather than loaded one by one.
    """
    _run_host(name, HOST_IMAGE, images=images)
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


def start_host_without_systemd(
    name: str, timeout_s: float = 90, images: Sequence[str] = ()
) -> None:
    """A host container whose PID 1 is not systemd (``sleep``), with dockerd started by hand.

    The same image and capabilities as :func:`start_host`; Ansible's ``ansible_service_mgr`` is
    then ``sleep``, so the roles take their Docker restart-policy path. dockerd runs as the
    platform notes say for such machines (and as the docker role starts it there).
    """
    _run_host(name, "--entrypoint", "sleep", HOST_IMAGE, "infinity", images=images)
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


# Each poll starts an Erlang VM for ``rabbitmqctl`` (about 0.6 s of CPU on the 2-core machine):
# one call covers every queue, and polls are seconds apart, not a busy loop.
CONSUMER_POLL_S = 2.0


def wait_for_consumers(
    host: str, shards: Iterable[int], timeout_s: float = 240, prefix: str = "codex"
) -> None:
    """Until the queue of each of ``shards`` has exactly one consumer on ``host``'s broker."""
    wanted = {f"{prefix}-{shard}": 1 for shard in shards}
    seen: dict[str, int] = {}

    def consuming() -> bool:
        seen.clear()
        seen.update(queue_consumers(host))
        return all(seen.get(queue) == 1 for queue in wanted)

    try:
        wait_until(
            consuming, f"one consumer on each of {sorted(wanted)}", timeout_s, CONSUMER_POLL_S
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the broker lists {seen}") from None
