"""Sign a shard's volume in, or repair it, without anyone entering a container.

Secrets travel only on standard input of a short-lived job container (never argv, env or an
image layer), and a file offered as a login is validated before the volume is touched.
"""

from __future__ import annotations

import shlex
import socket
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from docker.types import Mount

from moonmind_codex.authfile import inspect_auth_json
from moonmind_codex.dockerio import labels, volume_exists
from moonmind_codex.messages import create_volume
from moonmind_codex.preflight import CODEX_HOME
from moonmind_codex.settings import Settings


class LoginError(RuntimeError):
    """The login could not be written; nothing in the volume was changed."""


def _require_volume(settings: Settings, shard: int, client: Any) -> str:
    volume = settings.volume_for_shard(shard)
    if not volume_exists(client, volume):
        raise LoginError(create_volume(shard, volume, settings.host_name))
    return volume


def _run_with_stdin(
    settings: Settings, shard: int, volume: str, command: list[str], payload: bytes, client: Any
) -> tuple[int, str]:
    """Run ``command`` in a job container on the volume with ``payload`` on its stdin.

    Uses the Engine API (attach before start, stdin closed after the payload), so it needs no
    docker CLI and works from inside the worker image.
    """
    config = client.api.create_container_config(
        settings.job_image,
        command[1:],
        entrypoint=[command[0]],
        user=f"{settings.job_uid}:{settings.job_gid}",
        environment={"HOME": "/home/app"},
        labels=labels(role="login", shard=shard, volume=volume),
        stdin_open=True,
        host_config=client.api.create_host_config(
            mounts=[Mount(target=CODEX_HOME, source=volume, type="volume")],
            network_mode="none",
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
        ),
    )
    # The SDK has no parameter for it: with StdinOnce the container's stdin closes when we
    # close our end, so `cat` and `codex login --with-api-key` see the end of input.
    config["StdinOnce"] = True
    container = client.containers.get(client.api.create_container_from_config(config)["Id"])
    try:
        sock = container.attach_socket(params={"stdin": 1, "stream": 1})
        container.start()
        raw = getattr(sock, "_sock", sock)
        raw.sendall(payload)
        # Half-close: close() alone would wait for the SocketIO wrapper's references.
        raw.shutdown(socket.SHUT_WR)
        sock.close()
        code = int(container.wait(timeout=120).get("StatusCode", 1))
        err = container.logs(stdout=False, stderr=True).decode("utf-8", "replace")[-2000:]
        return code, err
    finally:
        container.remove(force=True)


def login_from_file(settings: Settings, shard: int, source: Path, client: Any) -> None:
    """Copy an ``auth.json`` made elsewhere into the shard's volume (0600, job uid)."""
    try:
        raw = source.read_bytes()
    except OSError as exc:
        raise LoginError(f"cannot read {source}: {exc.strerror}") from None
    login_from_bytes(settings, shard, raw, client, str(source))


def login_from_bytes(
    settings: Settings, shard: int, raw: bytes, client: Any, source_name: str = "standard input"
) -> None:
    """Validate ``raw`` as a Codex login, then write it into the shard's volume."""
    volume = _require_volume(settings, shard, client)
    inspection = inspect_auth_json(raw, datetime.now(UTC))
    if not inspection.logged_in:
        problem = (
            inspection.parse_error
            or "; ".join(inspection.problems)
            or ("it holds neither ChatGPT tokens nor an API key")
        )
        raise LoginError(
            f"{source_name} is not a usable Codex login: {problem}; volume {volume} was not changed"
        )
    # Write beside, then rename: a reader never sees a half-written auth.json.
    script = (
        'umask 077 && cat > "$HOME/.codex/auth.json.moonmind-new" && '
        'mv -f "$HOME/.codex/auth.json.moonmind-new" "$HOME/.codex/auth.json"'
    )
    code, err = _run_with_stdin(settings, shard, volume, ["sh", "-c", script], raw, client)
    if code != 0:
        raise LoginError(f"writing auth.json into {volume} failed (exit {code}): {err.strip()}")


def login_api_key(settings: Settings, shard: int, key: str, client: Any) -> None:
    """``codex login --with-api-key`` in a job container, the key on its standard input."""
    volume = _require_volume(settings, shard, client)
    if not key.strip():
        raise LoginError("no API key was given on standard input; nothing changed")
    code, _err = _run_with_stdin(
        settings, shard, volume, ["codex", "login", "--with-api-key"], key.strip().encode(), client
    )
    if code != 0:
        # The CLI's stderr may echo part of the key: report only the exit code.
        raise LoginError(f"codex login --with-api-key failed with exit code {code}")


def login_device(settings: Settings, shard: int, client: Any) -> int:
    """Interactive ChatGPT device-code sign-in, attached to the operator's terminal."""
    volume = _require_volume(settings, shard, client)
    args = [
        "docker",
        "run",
        "--rm",
        "-it",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--user",
        f"{settings.job_uid}:{settings.job_gid}",
        "--mount",
        f"type=volume,source={volume},target={CODEX_HOME}",
        "--label",
        "io.moonmind.codex.role=login",
        settings.job_image,
        "codex",
        "login",
        "--device-auth",
    ]
    return subprocess.call(args)


def repair_command(settings: Settings) -> str:
    uid, gid = settings.job_uid, settings.job_gid
    return (
        f"chown -R {uid}:{gid} {CODEX_HOME} && chmod 0700 {CODEX_HOME} && "
        f"if [ -e {CODEX_HOME}/auth.json ]; then chmod 0600 {CODEX_HOME}/auth.json; fi"
    )


def repair_volume(settings: Settings, shard: int, client: Any) -> None:
    """As root in a short container: the volume back to the job uid, 0700, auth.json 0600."""
    volume = _require_volume(settings, shard, client)
    container = client.containers.run(
        settings.job_image,
        entrypoint=["sh", "-c", repair_command(settings)],
        command=[],
        user="0:0",
        mounts=[Mount(target=CODEX_HOME, source=volume, type="volume")],
        network_mode="none",
        cap_drop=["ALL"],
        cap_add=["CHOWN", "FOWNER", "DAC_OVERRIDE"],
        labels=labels(role="repair", shard=shard, volume=volume),
        detach=True,
    )
    try:
        code = container.wait(timeout=60).get("StatusCode")
        if code != 0:
            raise LoginError(
                f"repairing {volume} failed with exit code {code}: "
                + shlex.quote(container.logs().decode("utf-8", "replace")[-500:])
            )
    finally:
        container.remove(force=True)
