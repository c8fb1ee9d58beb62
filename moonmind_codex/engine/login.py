"""Sign a shard's volume in, repair it, or carry its login away, without entering a container.

Secrets travel only on the standard streams of a short-lived job container whose logging
driver keeps nothing (never argv, env, an image layer or a log), and a file offered as a login
is validated before the volume is touched. Every container here runs through the job image's
entry point, so it takes the volume's job lock: a login is never rewritten or read under a
running Codex job.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import docker
import docker.errors
import requests.exceptions

from moonmind_codex.core import messages
from moonmind_codex.core.authfile import inspect_auth_json
from moonmind_codex.core.exitcodes import ExitCode
from moonmind_codex.core.shard import Shard
from moonmind_codex.engine.client import volume_exists
from moonmind_codex.engine.containers import (
    CODEX_HOME,
    JobImageContainer,
    api_create_config,
    create_kwargs,
    docker_run_argv,
    unique_name,
)
from moonmind_codex.settings import Settings

STDIN_CONTAINER_TIMEOUT_S = 120
# The largest auth.json accepted or exported (a real one is a few KiB).
MAX_LOGIN_BYTES = 1 << 20
AUTH_FILE = f"{CODEX_HOME}/auth.json"


class LoginError(RuntimeError):
    """The login could not be written or read; nothing in the volume was changed."""


class LoginDataError(LoginError):
    """The auth.json offered as a login is not one (bad input data); nothing was touched."""


def _existing_shard(settings: Settings, number: int, client: docker.DockerClient) -> Shard:
    shard = settings.locate_shard(number)
    if not volume_exists(client, shard.volume):
        raise LoginError(messages.create_volume(shard))
    return shard


def _explain_exit(settings: Settings, shard: Shard, what: str, code: int) -> str:
    """Why a login/repair container failed, without quoting its output (it may hold a key)."""
    if code == ExitCode.TEMPFAIL:
        return (
            f"{what} refused: auth volume {shard.volume} is busy (a Codex job holds its lock); "
            f"nothing was changed; retry when the job has finished"
        )
    if code == ExitCode.CANTCREAT:
        return (
            f"{what} failed: uid {settings.job_uid} cannot write to volume {shard.volume}; "
            f"nothing was changed; {messages.repair(shard)}"
        )
    return f"{what} failed in volume {shard.volume} with exit code {code}"


def _login_container(
    shard: Shard, command: list[str], *, stdin: bool, network: str = "none"
) -> JobImageContainer:
    return JobImageContainer(
        role="login",
        shard=shard,
        command=command,
        name=unique_name("login", shard),
        stdin=stdin,
        network=network,
        keep_logs=False,
    )


def _run_attached(
    settings: Settings,
    spec: JobImageContainer,
    client: docker.DockerClient,
    payload: bytes | None = None,
) -> tuple[int, bytes, bytes]:
    """Run ``spec``, feeding ``payload`` to its stdin; return its exit code, stdout and stderr.

    Uses the Engine API (attach before start), so it needs no docker CLI and works from inside
    the worker image; the container's logging driver is off, so the output exists only here.
    """
    created = client.api.create_container_from_config(
        api_create_config(client, settings, spec), spec.name
    )
    container = client.containers.get(created["Id"])
    try:
        params = {"stdout": 1, "stderr": 1, "stream": 1, "stdin": 1 if spec.stdin else 0}
        sock = container.attach_socket(params=params)
        raw = getattr(sock, "_sock", sock)
        container.start()
        if payload is not None:
            raw.sendall(payload)
        if spec.stdin:
            # Half-close: close() alone would wait for the SocketIO wrapper's references.
            raw.shutdown(socket.SHUT_WR)
        stdout, stderr = _read_output(raw)
        sock.close()
        code = int(container.wait(timeout=STDIN_CONTAINER_TIMEOUT_S).get("StatusCode", 1))
        return code, stdout, stderr
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


def _read_output(raw: Any) -> tuple[bytes, bytes]:
    """Demultiplex the attach stream (8-byte frame headers, no TTY) into stdout and stderr."""
    raw.settimeout(STDIN_CONTAINER_TIMEOUT_S)
    buffer = bytearray()
    while chunk := raw.recv(65536):
        buffer += chunk
        if len(buffer) > MAX_LOGIN_BYTES + 65536:
            raise LoginError("the container wrote more than a login's worth of output")
    streams = {1: bytearray(), 2: bytearray()}
    position = 0
    while position + 8 <= len(buffer):
        stream, size = buffer[position], int.from_bytes(buffer[position + 4 : position + 8])
        frame = buffer[position + 8 : position + 8 + size]
        if stream in streams:
            streams[stream] += frame
        position += 8 + size
    return bytes(streams[1]), bytes(streams[2])


def read_login_source(source: Path | BinaryIO, name: str) -> bytes:
    """The bytes of an ``auth.json`` offered as a login: at most :data:`MAX_LOGIN_BYTES`."""
    try:
        if isinstance(source, Path):
            with source.open("rb") as stream:
                raw = stream.read(MAX_LOGIN_BYTES + 1)
        else:
            raw = source.read(MAX_LOGIN_BYTES + 1)
    except (OSError, ValueError) as exc:
        why = messages.unreadable_reason(exc)
        raise LoginDataError(
            f"cannot read {name}: {why}; nothing was changed (give the path of the auth.json "
            "that `codex login` wrote, or '-' for standard input)"
        ) from None
    if len(raw) > MAX_LOGIN_BYTES:
        raise LoginDataError(
            f"{name} is larger than {MAX_LOGIN_BYTES} bytes, so it is not a Codex login (a real "
            "auth.json is a few KiB); nothing was changed"
        )
    return raw


def check_login(settings: Settings, shard_number: int, raw: bytes, source_name: str) -> None:
    """Refuse ``raw`` unless it is a usable Codex login (pure: touches no engine or volume).

    Raises :class:`LoginDataError` (never quoting the file: it may hold a key) or
    :class:`~moonmind_codex.settings.SettingsError` for a shard outside the fleet.
    """
    shard = settings.locate_shard(shard_number)
    if len(raw) > MAX_LOGIN_BYTES:
        raise LoginDataError(
            f"{source_name} is larger than {MAX_LOGIN_BYTES} bytes, so it is not a Codex login; "
            f"volume {shard.volume} was not changed"
        )
    inspection = inspect_auth_json(raw, datetime.now(UTC))
    if not inspection.logged_in:
        # The inspection's wording never quotes the file, so it is safe to show.
        problem = (
            inspection.parse_error
            or "; ".join(inspection.problems)
            or "it holds neither ChatGPT tokens nor an API key nor an access token"
        )
        raise LoginDataError(
            f"{source_name} is not a usable Codex login: {problem}; volume {shard.volume} was "
            "not changed (give the auth.json that `codex login` wrote on a machine with a browser)"
        )


def login_from_file(
    settings: Settings, shard_number: int, source: Path, client: docker.DockerClient
) -> None:
    """Copy an ``auth.json`` made elsewhere into the shard's volume (0600, job uid)."""
    raw = read_login_source(source, str(source))
    login_from_bytes(settings, shard_number, raw, client, str(source))


def login_from_bytes(
    settings: Settings,
    shard_number: int,
    raw: bytes,
    client: docker.DockerClient,
    source_name: str = "standard input",
) -> None:
    """Validate ``raw`` as a Codex login, then write it into the shard's volume."""
    check_login(settings, shard_number, raw, source_name)
    shard = _existing_shard(settings, shard_number, client)
    # Written beside, then renamed: a reader never sees a half-written auth.json, and a failed
    # copy leaves the previous login in place.
    staged = f"{AUTH_FILE}.moonmind-new"
    script = f'umask 077 && cat > "{staged}" && mv -f "{staged}" "{AUTH_FILE}"'
    spec = _login_container(shard, ["sh", "-c", script], stdin=True)
    code, _, _ = _run_attached(settings, spec, client, raw)
    if code != 0:
        raise LoginError(_explain_exit(settings, shard, "writing auth.json", code))


@dataclass(frozen=True)
class StdinSignIn:
    """A ``codex login`` that reads its secret from standard input."""

    flag: str
    secret: str  # what the operator gives, for messages ("API key")
    # The CLI checks an access token with the sign-in service; an API key is not checked.
    online: bool
    # Quote the CLI's refusal (its error line, with the secret cut out)? The CLI's output for an
    # API key may echo part of the key, so only its exit code is reported.
    quote_refusal: bool


API_KEY = StdinSignIn("--with-api-key", "API key", online=False, quote_refusal=False)
ACCESS_TOKEN = StdinSignIn("--with-access-token", "access token", online=True, quote_refusal=True)
_MAX_REFUSAL_CHARS = 300


def _refusal(stderr: bytes, secret: str) -> str | None:
    """The CLI's own error line, with every piece of the secret replaced; None when absent."""
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines()]
    errors = [line for line in lines if line.lower().startswith("error")]
    if not errors:
        return None
    text = errors[-1]
    # The whole secret, then each part of a JWT (header, claims, signature).
    for piece in sorted({secret, *secret.split(".")}, key=len, reverse=True):
        if len(piece) >= 8:
            text = text.replace(piece, "<token>")
    return text[:_MAX_REFUSAL_CHARS]


def login_from_stdin(
    settings: Settings,
    shard_number: int,
    secret: str,
    client: docker.DockerClient,
    how: StdinSignIn,
) -> None:
    """``codex login FLAG`` in a job container, the secret on its standard input only."""
    shard = settings.locate_shard(shard_number)
    value = secret.strip()
    if not value:
        raise LoginError(f"no {how.secret} was given on standard input; nothing was changed")
    _existing_shard(settings, shard_number, client)
    network = settings.job_network if how.online else "none"
    spec = _login_container(shard, ["codex", "login", how.flag], stdin=True, network=network)
    code, _, stderr = _run_attached(settings, spec, client, value.encode())
    if code == 0:
        return
    what = f"codex login {how.flag}"
    refusal = _refusal(stderr, value) if how.quote_refusal else None
    if refusal is None or code in (ExitCode.TEMPFAIL, ExitCode.CANTCREAT):
        raise LoginError(_explain_exit(settings, shard, what, code))
    raise LoginError(
        f"{what} refused the {how.secret} (exit {code}): {refusal}; volume {shard.volume} was not "
        f"changed (the CLI checks the token with the sign-in service, over job network "
        f"{network!r})"
    )


def login_api_key(
    settings: Settings, shard_number: int, key: str, client: docker.DockerClient
) -> None:
    """``codex login --with-api-key`` in a job container, the key on its standard input."""
    login_from_stdin(settings, shard_number, key, client, API_KEY)


def login_access_token(
    settings: Settings, shard_number: int, token: str, client: docker.DockerClient
) -> None:
    """``codex login --with-access-token`` (an enterprise access token) on standard input.

    The CLI verifies the token with the sign-in service before it writes ``auth.json``, so this
    container uses the job network (``MOONMIND_CODEX_JOB_NETWORK``), unlike an API key's.
    """
    login_from_stdin(settings, shard_number, token, client, ACCESS_TOKEN)


def export_login(settings: Settings, shard_number: int, client: docker.DockerClient) -> bytes:
    """The volume's ``auth.json``, read under the volume lock (for moving a shard)."""
    shard = _existing_shard(settings, shard_number, client)
    spec = JobImageContainer(
        role="move",
        shard=shard,
        # No file prints nothing: reported below as "no usable login", not as a failure.
        command=["sh", "-c", f'if [ -e "{AUTH_FILE}" ]; then cat "{AUTH_FILE}"; fi'],
        name=unique_name("move", shard),
        keep_logs=False,
    )
    code, output, _ = _run_attached(settings, spec, client)
    if code != 0:
        raise LoginError(_explain_exit(settings, shard, "reading auth.json", code))
    if not inspect_auth_json(output, datetime.now(UTC)).logged_in:
        raise LoginError(
            f"volume {shard.volume} on host {shard.host} holds no usable login; nothing to move "
            f"({messages.sign_in(shard)})"
        )
    return output


def clear_login(settings: Settings, shard_number: int, client: docker.DockerClient) -> None:
    """Remove the volume's ``auth.json`` (the old copy after a move), under the volume lock."""
    shard = _existing_shard(settings, shard_number, client)
    spec = JobImageContainer(
        role="move",
        shard=shard,
        command=["rm", "-f", AUTH_FILE],
        name=unique_name("move", shard),
    )
    code = _run_detached(client, settings, spec)
    if code != 0:
        raise LoginError(_explain_exit(settings, shard, "removing auth.json", code))


def device_login_container(shard: Shard, settings: Settings) -> JobImageContainer:
    """The interactive sign-in; the device-code flow talks to the sign-in service."""
    return JobImageContainer(
        role="login",
        shard=shard,
        command=["codex", "login", "--device-auth"],
        name=unique_name("login", shard),
        network=settings.job_network,
        keep_logs=False,
    )


def login_device(settings: Settings, shard_number: int, client: docker.DockerClient) -> int:
    """Interactive ChatGPT device-code sign-in, attached to the operator's terminal.

    Returns the exit code of ``codex login --device-auth`` (75: a job holds the volume).
    """
    spec = device_login_container(_existing_shard(settings, shard_number, client), settings)
    try:
        return subprocess.call(docker_run_argv(settings, spec, interactive=True))
    finally:
        # An interrupted docker CLI leaves its container running: stop it here.
        with contextlib.suppress(docker.errors.NotFound, requests.exceptions.RequestException):
            client.containers.get(spec.name).remove(force=True)


def repair_command(settings: Settings) -> str:
    uid, gid = settings.job_uid, settings.job_gid
    return (
        f"chown -R {uid}:{gid} {CODEX_HOME} && chmod 0700 {CODEX_HOME} && "
        f"if [ -e {AUTH_FILE} ]; then chmod 0600 {AUTH_FILE}; fi"
    )


def repair_container(settings: Settings, shard: Shard) -> JobImageContainer:
    """Root, but only the capabilities chown/chmod need."""
    return JobImageContainer(
        role="repair",
        shard=shard,
        command=["sh", "-c", repair_command(settings)],
        name=unique_name("repair", shard),
        as_root=True,
    )


def _run_detached(client: docker.DockerClient, settings: Settings, spec: JobImageContainer) -> int:
    # create + start, not run(): run() would try to pull a missing image from a registry.
    container = client.containers.create(**create_kwargs(settings, spec))
    try:
        container.start()
        return int(container.wait(timeout=STDIN_CONTAINER_TIMEOUT_S).get("StatusCode", 1))
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


def repair_volume(settings: Settings, shard_number: int, client: docker.DockerClient) -> None:
    """As root in a short container: the volume back to the job uid, 0700, auth.json 0600."""
    shard = _existing_shard(settings, shard_number, client)
    code = _run_detached(client, settings, repair_container(settings, shard))
    if code != 0:
        raise LoginError(_explain_exit(settings, shard, "repair", code))
