"""A throw-away fleet CA for tests and benchmarks: broker TLS and message-signing certificates.

The playbook makes the real ones with community.crypto; these have the same shape (an RSA CA,
a server certificate with the broker's names, RSA signing certificates issued by the CA), so a
test exercises the same files the workers read on a provisioned host.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from celery.security.certificate import Certificate
from celery.security.key import PrivateKey
from celery.security.serialization import SecureSerializer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Identity:
    key: Path
    cert: Path


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_key(key: rsa.RSAPrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


class FleetCA:
    """A CA in ``directory``; issues server and signing certificates next to it."""

    def __init__(self, directory: Path, name: str = "moonmind-codex test CA") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._key = _key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        self.cert_path = directory / "ca.crt"
        self.cert_path.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        name: str,
        *,
        dns: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
        server: bool = False,
    ) -> Identity:
        key = _key()
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if server:
            names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
            names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
            builder = builder.add_extension(
                x509.SubjectAlternativeName(names), critical=False
            ).add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
        cert = builder.sign(self._key, hashes.SHA256())
        identity = Identity(self.directory / f"{name}.key", self.directory / f"{name}.crt")
        _write_key(key, identity.key)
        identity.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return identity


def trust_dir(directory: Path, *certs: Path) -> Path:
    """A signing trust directory holding ``certs`` (as ``*.pem``, the pattern workers load)."""
    directory.mkdir(parents=True, exist_ok=True)
    for cert in certs:
        (directory / f"{cert.stem}.pem").write_bytes(cert.read_bytes())
    return directory


def signed_body(identity: Identity, body: bytes, inner_type: str, inner_encoding: str) -> str:
    """``body`` in the wire form of Celery's ``auth`` serializer (base64 text), signed with
    ``identity``'s key under any inner content type: what a holder of that key can send."""
    signer = SecureSerializer(
        PrivateKey(identity.key.read_text()), Certificate(identity.cert.read_text())
    )
    packed: str = signer._pack(
        body,
        inner_type,
        inner_encoding,
        signer=signer._cert.get_id(),
        signature=signer._key.sign(body, signer._digest),
    )
    return packed
