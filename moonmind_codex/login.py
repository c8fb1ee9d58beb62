"""Sign a shard's volume in, or repair it, without anyone entering a container.

Secrets travel only on standard input of a short-lived job container (never argv, env or an
image layer), and a file offered as a login is validated before the volume is touched. Every
container here runs through the job image's entry point, so it takes the volume's job lock:
a login is never rewritten under a running Codex job.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker.types import Mount

from moonmind_codex import messages
from moonmind_codex.authfile import inspect_auth_json
from moonmind_codex.dockerio import labels, volume_exists
from moonmind_codex.jobs import EXIT_VOLUME_BUSY
from moonmind_codex.preflight import CODEX_HOME
from moonmind_codex.settings import Settings

# Exit status of the image's entry point when it cannot open the lock file in the volume.
EXIT_LOCK_UNAVAILABLE = 73
STDIN_CONTAINER_TIMEOUT_S = 120


class LoginError(RuntimeError):
    """The login could not be written; nothing in the volume was changed."""


def _require_volume(settings: Settings, shard: int, client: docker.DockerClient) -> str:
    volume = settings.volume_for_shard(shard)
    if not volume_exists(client, volume):
        raise LoginError(messages.create_volume(shard, volume, settings.host_name))
    return volume


def _explain_exit(settings: Settings, shard: int, volume: str, what: str, code: int) -> str:
    """Why a login/repair container failed, without quoting its output (it may hold a key)."""
    host = settings.host_name
    if code == EXIT_VOLUME_BUSY:
        return (
            f"{what} refused: auth volume {volume} is busy (a Codex job holds its lock); "
            f"nothing was changed; retry when the job has finished"
        )
    if code == EXIT_LOCK_UNAVAILABLE:
        return (
            f"{what} failed: uid {settings.job_uid} cannot write to volume {volume}; nothing was "
            f"changed; {messages.repair(shard, volume, host)}"
        )
    return f"{what} failed in volume {volume} with exit code {code}"


def _container_name(role: str, shard: int) -> str:
    return f"mmc-{role}-{shard}-{secrets.token_hex(4)}"


def _run_with_stdin(
    settings: Settings,
    shard: int,
    volume: str,
    command: list[str],
    payload: bytes,
    client: docker.DockerClient,
) -> int:
    """Run ``command`` in a job container on the volume with ``payload`` on its stdin.

    Uses the Engine API (attach before start, stdin closed after the payload), so it needs no
    docker CLI and works from inside the worker image. Returns the exit code.
    """
    config = client.api.create_container_config(
        settings.job_image,
        command,
        user=f"{settings.job_uid}:{settings.job_gid}",
        environment={"HOME": "/home/app"},
        labels=labels(role="login", shard=shard, volume=volume, host=settings.host_name),
        stdin_open=True,
        host_config=client.api.create_host_config(
            mounts=[Mount(target=CODEX_HOME, source=volume, type="volume", read_only=False)],
            network_mode="none",
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
        ),
    )
    # The SDK has no parameter for it: with StdinOnce the container's stdin closes when we
    # close our end, so `cat` and `codex login --with-api-key` see the end of input.
    config["StdinOnce"] = True
    created = client.api.create_container_from_config(config, _container_name("login", shard))
    container = client.containers.get(created["Id"])
    try:
        sock = container.attach_socket(params={"stdin": 1, "stream": 1})
        container.start()
        raw = getattr(sock, "_sock", sock)
        raw.sendall(payload)
        # Half-close: close() alone would wait for the SocketIO wrapper's references.
        raw.shutdown(socket.SHUT_WR)
        sock.close()
        return int(container.wait(timeout=STDIN_CONTAINER_TIMEOUT_S).get("StatusCode", 1))
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


def login_from_file(
    settings: Settings, shard: int, source: Path, client: docker.DockerClient
) -> None:
    """Copy an ``auth.json`` made elsewhere into the shard's volume (0600, job uid)."""
    try:
        raw = source.read_bytes()
    except OSError as exc:
        raise LoginError(f"cannot read {source}: {exc.strerror}; nothing was changed") from None
    login_from_bytes(settings, shard, raw, client, str(source))


def login_from_bytes(
    settings: Settings,
    shard: int,
    raw: bytes,
    client: docker.DockerClient,
    source_name: str = "standard input",
) -> None:
    """Validate ``raw`` as a Codex login, then write it into the shard's volume."""
    volume = settings.volume_for_shard(shard)
    inspection = inspect_auth_json(raw, datetime.now(UTC))
    if not inspection.logged_in:
        # The inspection's wording never quotes the file, so it is safe to show.
        problem = (
            inspection.parse_error
            or "; ".join(inspection.problems)
            or "it holds neither ChatGPT tokens nor an API key"
        )
        raise LoginError(
            f"{source_name} is not a usable Codex login: {problem}; volume {volume} was not "
            "changed (give the auth.json that `codex login` wrote on a machine with a browser)"
        )
    _require_volume(settings, shard, client)
    # Written beside, then renamed: a reader never sees a half-written auth.json, and a failed
    # copy leaves the previous login in place.
    script = (
        "umask 077 && "
        f'cat > "{CODEX_HOME}/auth.json.moonmind-new" && '
        f'mv -f "{CODEX_HOME}/auth.json.moonmind-new" "{CODEX_HOME}/auth.json"'
    )
    code = _run_with_stdin(settings, shard, volume, ["sh", "-c", script], raw, client)
    if code != 0:
        raise LoginError(_explain_exit(settings, shard, volume, "writing auth.json", code))


def login_api_key(settings: Settings, shard: int, key: str, client: docker.DockerClient) -> None:
    """``codex login --with-api-key`` in a job container, the key on its standard input."""
    volume = settings.volume_for_shard(shard)
    if not key.strip():
        raise LoginError("no API key was given on standard input; nothing was changed")
    _require_volume(settings, shard, client)
    code = _run_with_stdin(
        settings, shard, volume, ["codex", "login", "--with-api-key"], key.strip().encode(), client
    )
    if code != 0:
        # The CLI's stderr may echo part of the key: only the exit code is reported.
        raise LoginError(_explain_exit(settings, shard, volume, "codex login --with-api-key", code))


def device_login_args(settings: Settings, shard: int, volume: str, name: str) -> list[str]:
    """The ``docker run -it`` command line of the interactive sign-in (no secret in it)."""
    args = ["docker"]
    if settings.docker_url:
        args += ["--host", settings.docker_url]
    args += ["run", "--rm", "-it", "--name", name]
    args += ["--user", f"{settings.job_uid}:{settings.job_gid}", "--env", "HOME=/home/app"]
    args += ["--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
    # The device-code flow talks to the sign-in service: the job network, not "none".
    args += ["--network", settings.job_network]
    args += ["--mount", f"type=volume,source={volume},target={CODEX_HOME}"]
    for key, value in labels(
        role="login", shard=shard, volume=volume, host=settings.host_name
    ).items():
        args += ["--label", f"{key}={value}"]
    return [*args, settings.job_image, "codex", "login", "--device-auth"]


def login_device(settings: Settings, shard: int, client: docker.DockerClient) -> int:
    """Interactive ChatGPT device-code sign-in, attached to the operator's terminal.

    Returns the exit code of ``codex login --device-auth`` (75: a job holds the volume).
    """
    volume = _require_volume(settings, shard, client)
    name = _container_name("login", shard)
    try:
        return subprocess.call(device_login_args(settings, shard, volume, name))
    finally:
        # An interrupted docker CLI leaves its container running: stop it here.
        with contextlib.suppress(docker.errors.NotFound, requests.exceptions.RequestException):
            client.containers.get(name).remove(force=True)


def repair_command(settings: Settings) -> str:
    uid, gid = settings.job_uid, settings.job_gid
    return (
        f"chown -R {uid}:{gid} {CODEX_HOME} && chmod 0700 {CODEX_HOME} && "
        f"if [ -e {CODEX_HOME}/auth.json ]; then chmod 0600 {CODEX_HOME}/auth.json; fi"
    )


def repair_config(settings: Settings, shard: int, volume: str) -> dict[str, Any]:
    """Arguments for ``containers.create``: root, but only the capabilities chown/chmod need."""
    return {
        "image": settings.job_image,
        "command": ["sh", "-c", repair_command(settings)],
        "name": _container_name("repair", shard),
        "user": "0:0",
        "environment": {"HOME": "/home/app"},
        "mounts": [Mount(target=CODEX_HOME, source=volume, type="volume", read_only=False)],
        "network_mode": "none",
        "cap_drop": ["ALL"],
        "cap_add": ["CHOWN", "FOWNER", "DAC_OVERRIDE"],
        "security_opt": ["no-new-privileges"],
        "labels": labels(role="repair", shard=shard, volume=volume, host=settings.host_name),
        "detach": True,
    }


def repair_volume(settings: Settings, shard: int, client: docker.DockerClient) -> None:
    """As root in a short container: the volume back to the job uid, 0700, auth.json 0600."""
    volume = _require_volume(settings, shard, client)
    # create + start, not run(): run() would try to pull a missing image from a registry.
    container = client.containers.create(**repair_config(settings, shard, volume))
    try:
        container.start()
        code = int(container.wait(timeout=STDIN_CONTAINER_TIMEOUT_S).get("StatusCode", 1))
        if code != 0:
            raise LoginError(_explain_exit(settings, shard, volume, "repair", code))
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
