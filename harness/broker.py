"""A real RabbitMQ broker container (the project's broker image) for tests and benchmarks."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kombu.connection import Connection

BROKER_IMAGE = "moonmind-codex/broker:latest"
# On a test broker: a digest of its URL (see broker_container), never the URL itself.
URL_LABEL = "io.moonmind.codex.test-broker-url"


def _url_digest(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def wait_for_broker(
    container: Any,
    ready_line: str,
    url: str,
    ssl: dict[str, Any] | None = None,
    timeout_s: float = 90,
) -> None:
    """Until the broker logged ``ready_line`` and accepts a login at ``url``; fail if it exits."""
    deadline = time.monotonic() + timeout_s
    while True:
        container.reload()
        logs = container.logs().decode("utf-8", "replace")
        if ready_line in logs:
            conn: Any = Connection(url, ssl=ssl, connect_timeout=5)  # type: ignore[no-untyped-call]
            try:
                conn.connect()
                return
            except (OSError, *conn.connection_errors):
                pass  # the log line comes a moment before the listener accepts logins
            finally:
                conn.release()
        if container.status == "exited":
            raise RuntimeError(f"broker exited: {logs[-2000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"broker not ready after {timeout_s} s: {logs[-2000:]}")
        time.sleep(0.5)


def bound_port(container: Any, container_port: str) -> int:
    """The loopback port the engine bound for ``container_port`` (it chose a free one)."""
    container.reload()
    bindings = container.attrs["NetworkSettings"]["Ports"].get(container_port) or []
    ports = {int(b["HostPort"]) for b in bindings if b.get("HostIp") == "127.0.0.1"}
    if len(ports) != 1:
        raise RuntimeError(f"{container.name}: no single loopback port for {container_port}")
    return ports.pop()


def broker_container(client: Any, url: str) -> Any:
    """The broker container behind ``url`` (from ``running_broker``), to restart or inspect."""
    label = f"{URL_LABEL}={_url_digest(url)}"
    (found,) = client.containers.list(all=True, filters={"label": label})
    return found


@contextmanager
def running_broker(client: Any, workdir: Path, timeout_s: float = 90) -> Iterator[str]:
    """Start the broker on a loopback port; yield its AMQP URL; remove it and its data.

    The engine picks the port when it binds it, so nothing chosen beforehand can be lost. It
    binds it for a small holder container whose network namespace the broker joins: the
    binding (and so the URL) outlives a restart of the broker, which a broker publishing the
    port itself would not (the engine picks a new port at every start).
    """
    password = secrets.token_urlsafe(18)
    secret = workdir / f"broker-password-{secrets.token_hex(3)}"
    secret.write_text(password)
    secret.chmod(0o644)  # read by the rabbitmq user inside the container
    name = f"mmc-test-broker-{secrets.token_hex(4)}"
    holder = client.containers.run(
        BROKER_IMAGE,
        name=f"{name}-net",
        entrypoint=["sleep", "infinity"],
        # It only holds the port: the image's broker health check (an Erlang VM per run) would
        # probe the broker next door once more, for nothing.
        healthcheck={"test": ["NONE"]},
        detach=True,
        ports={"5672/tcp": ("127.0.0.1", None)},
        labels={"io.moonmind.codex.test": "1"},
    )
    container = None
    try:
        port = bound_port(holder, "5672/tcp")
        url = f"amqp://moonmind:{password}@127.0.0.1:{port}//"
        container = client.containers.run(
            BROKER_IMAGE,
            name=name,
            detach=True,
            network_mode=f"container:{holder.id}",
            volumes={
                str(secret): {"bind": "/run/secrets/moonmind_codex_broker_password", "mode": "ro"}
            },
            labels={"io.moonmind.codex.test": "1", URL_LABEL: _url_digest(url)},
        )
        wait_for_broker(container, "ready; user 'moonmind' configured", url, timeout_s=timeout_s)
        yield url
    finally:
        if container is not None:
            container.remove(force=True, v=True)
        holder.remove(force=True, v=True)
