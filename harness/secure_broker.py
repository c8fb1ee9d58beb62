"""The broker as the playbook runs it: TLS only, one user per role with least privilege.

Users and permissions come from the same table the broker role writes
(``plugins/filter/moonmind_codex_broker.py``), certificates from a throw-away fleet CA.
"""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from kombu.connection import Connection

from harness.pki import FleetCA

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins" / "filter"))
from moonmind_codex_broker import broker_definitions, broker_users, fleet_queue_names

BROKER_IMAGE = "moonmind-codex/broker:latest"
TLS_PORT = "5671/tcp"
PLAIN_PORT = "5672/tcp"


@dataclass
class SecureBroker:
    container: Any
    ca: FleetCA
    host: str
    port: int
    passwords: dict[str, str] = field(default_factory=dict)

    def url(self, user: str) -> str:
        """The amqps:// URL of ``user`` (a name from the users table)."""
        return f"amqps://{user}:{quote(self.passwords[user], safe='')}@{self.host}:{self.port}//"

    def ssl_options(self) -> dict[str, Any]:
        import ssl

        return {
            "ca_certs": str(self.ca.cert_path),
            "cert_reqs": ssl.CERT_REQUIRED,
            "server_hostname": None,
        }

    def container_ip(self) -> str:
        self.container.reload()
        networks = self.container.attrs["NetworkSettings"]["Networks"]
        return str(next(iter(networks.values()))["IPAddress"])


@contextmanager
def running_secure_broker(
    client: Any, workdir: Path, shard_count: int = 3, timeout_s: float = 90
) -> Iterator[SecureBroker]:
    """Start the broker with TLS and the fleet's users; yield it; remove it and its data."""
    tag = secrets.token_hex(4)
    secrets_dir = workdir / f"broker-secrets-{tag}"
    tls_dir = secrets_dir / "tls"
    ca = FleetCA(secrets_dir / "ca")
    server = ca.issue("broker", dns=("localhost",), ips=("127.0.0.1",), server=True)
    tls_dir.mkdir(parents=True)
    for source, name in ((ca.cert_path, "ca.crt"), (server.cert, "broker.crt")):
        (tls_dir / name).write_bytes(source.read_bytes())
    (tls_dir / "broker.key").write_bytes(server.key.read_bytes())
    users = broker_users(shard_count)
    passwords = {user["name"]: secrets.token_urlsafe(18) for user in users}
    definitions = secrets_dir / "definitions.json"
    definitions.write_text(broker_definitions(users, passwords, fleet_queue_names(shard_count)))
    # Read by root in the container's entry point, which copies them for the rabbitmq user.
    for path in [definitions, *tls_dir.iterdir()]:
        path.chmod(0o644)
    container = client.containers.run(
        BROKER_IMAGE,
        name=f"mmc-test-tls-broker-{tag}",
        detach=True,
        # Docker picks the host port when it binds it: no window in which another process
        # can take a port chosen beforehand.
        ports={TLS_PORT: ("127.0.0.1", None)},
        volumes={
            str(definitions): {
                "bind": "/run/secrets/moonmind_codex_broker_definitions.json",
                "mode": "ro",
            },
            str(tls_dir): {"bind": "/run/secrets/moonmind_codex_broker_tls", "mode": "ro"},
        },
        labels={"io.moonmind.codex.test": "1"},
    )
    try:
        deadline = time.monotonic() + timeout_s
        broker: SecureBroker | None = None
        while True:
            container.reload()
            logs = container.logs().decode("utf-8", "replace")
            if "ready; users configured" in logs:
                port = int(container.ports[TLS_PORT][0]["HostPort"])
                broker = SecureBroker(container, ca, "127.0.0.1", port, passwords)
                conn: Any = Connection(  # type: ignore[no-untyped-call]
                    broker.url("codex-producer"), ssl=broker.ssl_options(), connect_timeout=5
                )
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
        yield broker
    finally:
        container.remove(force=True, v=True)
