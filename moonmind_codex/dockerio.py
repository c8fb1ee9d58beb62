"""The thin Docker adapter: connecting, and the few engine questions the runtime asks."""

from __future__ import annotations

from typing import Any

import docker
import docker.errors
import requests.exceptions

from moonmind_codex import messages
from moonmind_codex.settings import Settings

LABEL = "io.moonmind.codex."

# Errors that mean "the engine is not there", as opposed to "the engine said no".
ENGINE_UNREACHABLE: tuple[type[BaseException], ...] = (
    docker.errors.DockerException,
    requests.exceptions.ConnectionError,
    ConnectionError,
    FileNotFoundError,
)


class DockerUnavailable(RuntimeError):
    """The Docker engine cannot be reached; the message says how to start it."""


def connect(settings: Settings, timeout_s: float = 10.0) -> Any:
    """A client for the configured engine (``docker_url`` or the environment), ping()ed."""
    try:
        if settings.docker_url:
            client = docker.DockerClient(base_url=settings.docker_url, timeout=int(timeout_s))
        else:
            client = docker.from_env(timeout=int(timeout_s))
        client.ping()
    except ENGINE_UNREACHABLE as exc:
        where = settings.docker_url or "the default socket (DOCKER_HOST or /var/run/docker.sock)"
        raise DockerUnavailable(
            f"cannot reach the Docker engine at {where} ({type(exc).__name__}); "
            + messages.start_docker(settings.host_name)
        ) from exc
    return client


def volume_exists(client: Any, name: str) -> bool:
    try:
        client.volumes.get(name)
    except docker.errors.NotFound:
        return False
    return True


def labels(**values: object) -> dict[str, str]:
    """Project labels (``io.moonmind.codex.<key>``), keys with '_' written as '-'."""
    return {LABEL + k.replace("_", "-"): str(v) for k, v in values.items() if v is not None}
