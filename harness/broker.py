"""A real RabbitMQ broker container (the project's broker image) for tests and benchmarks."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kombu.connection import Connection

BROKER_IMAGE = "moonmind-codex/broker:latest"


def bound_port(container: Any, container_port: str) -> int:
    """The loopback port the engine bound for ``container_port`` (it chose a free one)."""
    container.reload()
    bindings = container.attrs["NetworkSettings"]["Ports"].get(container_port) or []
    ports = {int(b["HostPort"]) for b in bindings if b.get("HostIp") == "127.0.0.1"}
    if len(ports) != 1:
        raise RuntimeError(f"{container.name}: no single loopback port for {container_port}")
    return ports.pop()


@contextmanager
def running_broker(client: Any, workdir: Path, timeout_s: float = 90) -> Iterator[str]:
    """Start the broker on a loopback port; yield its AMQP URL; remove it and its data.

    The engine picks the port when it binds it (nothing chosen beforehand can be lost).
    """
    password = secrets.token_urlsafe(18)
    secret = workdir / f"broker-password-{secrets.token_hex(3)}"
    secret.write_text(password)
    secret.chmod(0o644)  # read by the rabbitmq user inside the container
    name = f"mmc-test-broker-{secrets.token_hex(4)}"
    container = client.containers.run(
        BROKER_IMAGE,
        name=name,
        detach=True,
        ports={"5672/tcp": ("127.0.0.1", None)},
        volumes={
            str(secret): {"bind": "/run/secrets/moonmind_codex_broker_password", "mode": "ro"}
        },
        labels={"io.moonmind.codex.test": "1"},
    )
    try:
        url = f"amqp://moonmind:{password}@127.0.0.1:{bound_port(container, '5672/tcp')}//"
        deadline = time.monotonic() + timeout_s
        while True:
            container.reload()
            logs = container.logs().decode("utf-8", "replace")
            if "ready; user 'moonmind' configured" in logs:
                conn: Any = Connection(url, connect_timeout=5)  # type: ignore[no-untyped-call]
                try:
                    conn.connect()
                    break
                except (OSError, *conn.connection_errors):
                    pass  # the log line comes a moment before the listener accepts logins
                finally:
                    conn.release()
            if container.status == "exited":
                raise RuntimeError(f"broker exited: {logs[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"broker not ready after {timeout_s} s: {logs[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        container.remove(force=True, v=True)
