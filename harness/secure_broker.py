"""The broker as the playbook runs it: TLS only, one user per role with least privilege.

Users and permissions come from the same table the broker role writes
(``plugins/filter/moonmind_codex_broker.py``), certificates from a throw-away fleet CA.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from harness.broker import bound_port, wait_for_broker
from harness.fleet import STATE_DIR, WORKER_UID
from harness.pki import FleetCA, Identity, trust_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins" / "filter"))
from moonmind_codex_broker import broker_definitions, broker_users, fleet_queue_names

BROKER_IMAGE = "moonmind-codex/broker:latest"
TLS_PORT = "5671/tcp"


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

    def signed_worker(self, state: Path, *trusted: Identity) -> dict[str, str]:
        """A worker's signing identity, the fleet CA and a trust directory (the worker's own
        certificate and ``trusted``) in ``state/pki``, owned by the worker uid; the settings that
        point a worker container (``state`` mounted at STATE_DIR, as start_worker does) at them.
        """
        pki = state / "pki"
        worker = self.ca.issue("signing-worker")
        trust_dir(pki / "trusted", *(t.cert for t in trusted), worker.cert)
        for source in (self.ca.cert_path, worker.key, worker.cert):
            (pki / source.name).write_bytes(source.read_bytes())
        for path in [pki, *pki.rglob("*")]:
            os.chown(path, WORKER_UID, WORKER_UID)
        inside = Path(STATE_DIR) / "pki"
        return {
            "MOONMIND_CODEX_BROKER_CA_PATH": str(inside / self.ca.cert_path.name),
            "MOONMIND_CODEX_SIGNING_KEY_PATH": str(inside / worker.key.name),
            "MOONMIND_CODEX_SIGNING_CERT_PATH": str(inside / worker.cert.name),
            "MOONMIND_CODEX_SIGNING_TRUST_DIR": str(inside / "trusted"),
            "MOONMIND_CODEX_DECLARE_QUEUES": "false",
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
        port = bound_port(container, TLS_PORT)
        broker = SecureBroker(container, ca, "127.0.0.1", port, passwords)
        wait_for_broker(
            container,
            "ready; users configured",
            broker.url("codex-producer"),
            broker.ssl_options(),
            timeout_s,
        )
        yield broker
    finally:
        container.remove(force=True, v=True)
