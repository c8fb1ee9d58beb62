"""Worker start-up guards: refuse to serve a shard whose volume is missing or already served,
or whose job network is missing (jobs never fall back to another network).

A worker without its volume would otherwise run phases against nothing, and two workers on one
volume would redeem the same rotating refresh token and log each other out.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import docker

from moonmind_codex.core import messages
from moonmind_codex.core.preflight_eval import PreflightResult
from moonmind_codex.engine.client import network_exists, volume_exists
from moonmind_codex.engine.containers import LABEL
from moonmind_codex.engine.preflight import run_preflight
from moonmind_codex.settings import Settings


class WorkerStartupError(RuntimeError):
    """The worker must not start; the message says why and what to do."""


_CONTAINER_ID = re.compile(r"/containers/([0-9a-f]{64})/")
# Docker's default hostname for a container: the first 12 hex digits of its id.
_SHORT_ID = re.compile(r"[0-9a-f]{12,64}")


def own_container_id(mountinfo: Path = Path("/proc/self/mountinfo")) -> str | None:
    """This process's container id, from the engine's bind mounts (hostname, resolv.conf).

    The hostname is no guide: with host networking it is the host's name.
    """
    try:
        match = _CONTAINER_ID.search(mountinfo.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None
    return match.group(1) if match else None


def _is_self(container: Any, settings: Settings) -> bool:
    if settings.worker_container and container.name == settings.worker_container:
        return True
    own = own_container_id()
    if own is not None:
        return bool(container.id == own)
    # Outside host networking the hostname defaults to the short container id; a host name
    # such as "abc" must not pass for the prefix of some other container's id.
    hostname = socket.gethostname()
    return bool(_SHORT_ID.fullmatch(hostname) and container.id.startswith(hostname))


def other_holders(settings: Settings, client: docker.DockerClient, volume: str) -> list[Any]:
    """Running worker containers on this engine, other than this one, that serve ``volume``."""
    running = client.containers.list(
        filters={"label": [f"{LABEL}role=worker", f"{LABEL}volume={volume}"], "status": "running"}
    )
    return [c for c in running if not _is_self(c, settings)]


def check_worker_startup(settings: Settings, client: docker.DockerClient) -> PreflightResult:
    """Refuse a missing or already-served volume, then run and return the start-up pre-flight.

    A blocked login does not stop the worker (each phase runs its own pre-flight and is blocked
    by it); the caller logs the result.
    """
    shard = settings.served_shard
    if not volume_exists(client, shard.volume):
        raise WorkerStartupError(
            f"auth volume {shard.volume} for shard {shard.number} does not exist on host "
            f"{shard.host}; the worker will not start (it never falls back to an ephemeral "
            "volume). " + messages.create_volume(shard)
        )
    if not network_exists(client, settings.job_network):
        raise WorkerStartupError(
            f"job network {settings.job_network} ({messages.ENV_PREFIX}JOB_NETWORK) does not "
            f"exist on host {shard.host}; the worker will not start (it never runs jobs on "
            "another network). " + messages.create_job_network(shard.host)
        )
    holders = other_holders(settings, client, shard.volume)
    if holders:
        holder = holders[0]
        holder_labels = holder.labels or {}
        raise WorkerStartupError(
            f"shard {shard.number}: "
            + messages.doubly_assigned(
                shard.volume,
                f"{holder.name} (shard {holder_labels.get(LABEL + 'shard', '?')})",
                holder_labels.get(LABEL + "host", shard.host),
            )
        )
    return run_preflight(settings, shard.number, client)
