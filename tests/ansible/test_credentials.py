"""The credentials role on the controller: fleet CA, broker certificate, signing keys, passwords.

Real ansible-playbook with community.crypto; the broker certificate and a producer password it
made are then used by the real broker image for a TLS handshake and an AMQP login.
"""

from __future__ import annotations

import re
import secrets
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from kombu import Connection

from harness.hosts import REPO, ansible_playbook, recap_changed

sys.path.insert(0, str(REPO / "plugins" / "filter"))
from moonmind_codex_broker import broker_definitions, broker_users, fleet_queue_names

USERS = ["codex-shard-0", "codex-shard-1", "codex-shard-2", "codex-producer", "codex-app-worker"]
SIGNERS = ["worker-a", "worker-b"]
PLAYBOOK = """\
- name: Fleet credentials
  hosts: codex_broker:codex_workers
  gather_facts: false
  roles:
    - moonmind_codex_credentials
"""


def _inventory(tmp: Path, secrets_dir: Path) -> Path:
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory = {
        "all": {
            "vars": {
                **local,
                "moonmind_codex_shard_count": 3,
                "moonmind_codex_secrets_dir": str(secrets_dir),
                "moonmind_codex_credentials_broker_extra_names": ["broker.example"],
            },
            "children": {
                "codex_workers": {
                    "hosts": {
                        "worker-a": {"moonmind_codex_shards": [0, 1]},
                        "worker-b": {"moonmind_codex_shards": [2], "ansible_host": "10.0.0.7"},
                    }
                },
                "codex_broker": {"hosts": {"worker-b": {}}},
            },
        }
    }
    path = tmp / "hosts.yml"
    path.write_text(yaml.safe_dump(inventory))
    return path


def _run(tmp: Path, secrets_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    playbook = tmp / "credentials.yml"
    playbook.write_text(PLAYBOOK)
    # The role calls its filters by collection name, as the installed collection must.
    collections = {"ANSIBLE_COLLECTIONS_PATH": str(REPO / "playbooks" / "collections")}
    return ansible_playbook(_inventory(tmp, secrets_dir), playbook, *args, extra_env=collections)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    tmp = tmp_path_factory.mktemp("credentials")
    secrets_dir = tmp / "credentials"
    done = _run(tmp, secrets_dir)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    return tmp, secrets_dir, done.stdout


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    public = ca.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    assert cert.signature_hash_algorithm is not None
    try:
        public.verify(
            cert.signature,
            cert.tbs_certificate_bytes,
            padding.PKCS1v15(),
            cert.signature_hash_algorithm,
        )
    except Exception:  # any verification failure means "not issued by"
        return False
    return cert.issuer == ca.subject


def test_everything_is_made_private_to_the_controller_user(made: tuple[Path, Path, str]) -> None:
    _, secrets_dir, _ = made
    for directory in (secrets_dir, secrets_dir / "signing", secrets_dir / "broker-passwords"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    private = [
        secrets_dir / "ca.key",
        secrets_dir / "broker.key",
        *(secrets_dir / "signing" / f"{h}.key" for h in SIGNERS),
        *(secrets_dir / "broker-passwords" / u for u in USERS),
    ]
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert sorted(p.name for p in (secrets_dir / "broker-passwords").iterdir()) == sorted(USERS)


def test_the_ca_signs_the_broker_certificate_with_the_names_workers_use(
    made: tuple[Path, Path, str],
) -> None:
    _, secrets_dir, _ = made
    ca = _cert(secrets_dir / "ca.crt")
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    broker = _cert(secrets_dir / "broker.crt")
    assert _issued_by(broker, ca)
    names = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(n.value) for n in names] == [
        "worker-b",
        "10.0.0.7",
        "localhost",
        "127.0.0.1",
        "broker.example",
    ]
    assert not broker.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_each_signer_gets_a_key_whose_signatures_its_certificate_verifies(
    made: tuple[Path, Path, str],
) -> None:
    _, secrets_dir, _ = made
    ca = _cert(secrets_dir / "ca.crt")
    for host in SIGNERS:
        cert = _cert(secrets_dir / "signing" / f"{host}.crt")
        assert _issued_by(cert, ca)
        key = load_pem_private_key((secrets_dir / "signing" / f"{host}.key").read_bytes(), None)
        assert isinstance(key, rsa.RSAPrivateKey)
        # What Celery's auth serializer does: RSA-PSS over the body, SHA-256.
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH)
        body = f"task for {host}".encode()
        public = cert.public_key()
        assert isinstance(public, rsa.RSAPublicKey)
        public.verify(key.sign(body, pss, hashes.SHA256()), body, pss, hashes.SHA256())


def test_passwords_are_long_random_and_never_printed(made: tuple[Path, Path, str]) -> None:
    _, secrets_dir, output = made
    passwords = [(secrets_dir / "broker-passwords" / u).read_text() for u in USERS]
    assert all(re.fullmatch(r"[A-Za-z0-9]{32}", p) for p in passwords), passwords
    assert len(set(passwords)) == len(passwords)
    assert not [p for p in passwords if p in output]


def test_a_second_run_changes_nothing_and_keeps_every_file(made: tuple[Path, Path, str]) -> None:
    tmp, secrets_dir, _ = made
    before = {p: p.read_bytes() for p in secrets_dir.rglob("*") if p.is_file()}
    again = _run(tmp, secrets_dir)
    assert again.returncode == 0, again.stdout[-4000:]
    assert recap_changed(again.stdout) == 0, again.stdout[-4000:]
    assert {p: p.read_bytes() for p in secrets_dir.rglob("*") if p.is_file()} == before


def test_check_mode_on_a_new_controller_reports_changes_and_writes_nothing(
    tmp_path: Path,
) -> None:
    secrets_dir = tmp_path / "credentials"
    done = _run(tmp_path, secrets_dir, "--check", "--diff")
    assert done.returncode == 0, done.stdout[-4000:]
    assert recap_changed(done.stdout) > 0
    assert not secrets_dir.exists()


@pytest.fixture
def broker_with_role_credentials(made: tuple[Path, Path, str]) -> Iterator[tuple[int, Path, str]]:
    tmp, secrets_dir, _ = made
    client = docker.from_env()
    tls = tmp / f"tls-{secrets.token_hex(3)}"
    tls.mkdir()
    for name in ("ca.crt", "broker.crt", "broker.key"):
        (tls / name).write_bytes((secrets_dir / name).read_bytes())
        (tls / name).chmod(0o644)
    users = broker_users(3)
    passwords = {u: (secrets_dir / "broker-passwords" / u).read_text() for u in USERS}
    definitions = tmp / f"definitions-{secrets.token_hex(3)}.json"
    definitions.write_text(broker_definitions(users, passwords, fleet_queue_names(3)))
    definitions.chmod(0o644)
    container = client.containers.run(
        "moonmind-codex/broker:latest",
        name=f"mmc-test-credbroker-{secrets.token_hex(3)}",
        detach=True,
        ports={"5671/tcp": ("127.0.0.1", None)},
        volumes={
            str(tls): {"bind": "/run/secrets/moonmind_codex_broker_tls", "mode": "ro"},
            str(definitions): {
                "bind": "/run/secrets/moonmind_codex_broker_definitions.json",
                "mode": "ro",
            },
        },
        labels={"io.moonmind.codex.test": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        while "ready; users configured" not in container.logs().decode("utf-8", "replace"):
            container.reload()
            assert container.status != "exited", container.logs()[-2000:]
            assert time.monotonic() < deadline, container.logs()[-2000:]
            time.sleep(0.5)
        container.reload()
        port = int(container.ports["5671/tcp"][0]["HostPort"])
        yield port, secrets_dir, passwords["codex-producer"]
    finally:
        container.remove(force=True, v=True)


def test_the_real_broker_serves_the_roles_certificate_and_passwords(
    broker_with_role_credentials: tuple[int, Path, str],
) -> None:
    port, secrets_dir, password = broker_with_role_credentials
    options = {
        "ca_certs": str(secrets_dir / "ca.crt"),
        "cert_reqs": ssl.CERT_REQUIRED,
        "server_hostname": None,
    }
    url = f"amqps://codex-producer:{password}@localhost:{port}//"
    deadline = time.monotonic() + 60
    while True:
        conn: Any = Connection(url, ssl=options, connect_timeout=10)  # type: ignore[no-untyped-call]
        try:
            conn.connect()
            break
        except (OSError, *conn.connection_errors):
            # The ready line comes a moment before the listener accepts logins.
            assert time.monotonic() < deadline
            time.sleep(0.5)
        finally:
            conn.release()
