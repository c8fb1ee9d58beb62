"""The thin Docker adapter: connecting, and the few engine questions the runtime asks."""

from __future__ import annotations

import docker
import docker.errors
import requests.exceptions

from moonmind_codex.core import messages
from moonmind_codex.settings import Settings

# Everything a call to the engine can raise that is not a bug in this package: the engine is
# gone, slow (read timeouts), or refused. Callers that must never raise (the pre-flight) catch
# these and report them.
ENGINE_ERRORS: tuple[type[BaseException], ...] = (
    docker.errors.DockerException,
    requests.exceptions.RequestException,
    OSError,
)


class DockerUnavailable(RuntimeError):
    """The Docker engine cannot be reached; the message says how to start it."""


# How long one engine call may take once the engine answered its ping: the Docker SDK's own
# default. A busy engine (many containers starting, a slow disk) can take tens of seconds to
# create a container; with the ping's 10 s for every call, such an engine was reported as
# down and phases that would have run were blocked with "start the Docker engine".
ENGINE_CALL_TIMEOUT_SECONDS = 60


def connect(settings: Settings, timeout_s: float = 10.0) -> docker.DockerClient:
    """A client for the configured engine (``docker_url`` or the environment), ping()ed.

    An engine that does not answer its ping within ``timeout_s`` is unavailable; after that,
    each call may take up to :data:`ENGINE_CALL_TIMEOUT_SECONDS`.
    """
    try:
        if settings.docker_url:
            client = docker.DockerClient(base_url=settings.docker_url, timeout=int(timeout_s))
        else:
            client = docker.from_env(timeout=int(timeout_s))
        client.ping()
    except ENGINE_ERRORS as exc:
        where = settings.docker_url or "the default socket (DOCKER_HOST or /var/run/docker.sock)"
        raise DockerUnavailable(
            f"cannot reach the Docker engine at {where} ({type(exc).__name__}); "
            + messages.start_docker(settings.host_name)
        ) from exc
    client.api.timeout = ENGINE_CALL_TIMEOUT_SECONDS
    return client


def network_exists(client: docker.DockerClient, name: str) -> bool:
    """Whether the named network exists (``container:<id>`` needs none). Only asks."""
    if name.startswith("container:"):
        return True
    try:
        client.networks.get(name)
    except docker.errors.NotFound:
        return False
    return True


def volume_exists(client: docker.DockerClient, name: str) -> bool:
    """Whether the named volume exists. Only asks: a missing volume is never created here."""
    try:
        client.volumes.get(name)
    except docker.errors.NotFound:
        return False
    return True
