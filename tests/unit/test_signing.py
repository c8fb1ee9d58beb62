"""Signed task messages: JSON-only bodies and a signed context (task, id, run, phase, attempt,
expiry), with real RSA keys and certificates from a throw-away fleet CA.

The broker-level proofs (a worker refusing each of these and auditing it) are in
tests/integration/test_broker_security.py; these pin the decisions themselves.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
from celery.exceptions import SecurityError
from celery.security.certificate import Certificate, FSCertStore
from celery.security.key import PrivateKey
from kombu.serialization import registry

from harness.pki import FleetCA, Identity, signed_body, trust_dir
from moonmind_codex.producer.signing import (
    BOUND_HEADERS,
    SECURITY_DIGEST,
    SIGNED_CONTEXT,
    JsonOnlySerializer,
    UnsafeSignedBody,
    context_refusal,
    forget_unsafe_serializers,
    signed_context,
)
from moonmind_codex.settings import Settings
from moonmind_codex.worker.celery_app import create_app

NOW = 1_800_000_000.0
HEADERS = {
    "task": "moonmind_codex.codex_phase",
    "id": "t-1",
    "moonmind_codex_run": "run-1",
    "moonmind_codex_phase": "plan",
    "moonmind_codex_attempt": 2,
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Identity, Path]:
    ca = FleetCA(tmp_path_factory.mktemp("ca"))
    producer = ca.issue("signing-producer")
    return producer, trust_dir(tmp_path_factory.mktemp("trusted"), producer.cert)


def _serializer(identity: Identity, trusted: Path) -> JsonOnlySerializer:
    return JsonOnlySerializer(
        PrivateKey(identity.key.read_text()),
        Certificate(identity.cert.read_text()),
        FSCertStore(str(trusted / "*.pem")),
        SECURITY_DIGEST,
    )


class _Marker:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.path}",))


def test_a_json_body_signed_by_a_trusted_key_round_trips(pki: tuple[Identity, Path]) -> None:
    serializer = _serializer(*pki)
    data = [[], {"run_id": "r"}, {"chain": None}]
    assert serializer.deserialize(serializer.serialize(data)) == data


@pytest.mark.parametrize(
    ("inner_type", "encoding"),
    [
        ("application/x-python-serialize", "binary"),
        ("application/x-yaml", "utf-8"),
        ("application/x-msgpack", "binary"),
        ("application/data", "binary"),
        ("text/plain", "utf-8"),
    ],
)
def test_a_signed_body_of_another_content_type_is_refused_before_it_is_decoded(
    pki: tuple[Identity, Path], tmp_path: Path, inner_type: str, encoding: str
) -> None:
    marker = tmp_path / "ran"
    body = pickle.dumps(_Marker(marker))
    serializer = _serializer(*pki)
    with pytest.raises(UnsafeSignedBody, match=f"content type is '{inner_type}'"):
        serializer.deserialize(signed_body(pki[0], body, inner_type, encoding))
    assert not marker.exists()


def test_a_tampered_json_body_is_still_refused(pki: tuple[Identity, Path]) -> None:
    serializer = _serializer(*pki)
    raw = serializer._unpack(signed_body(pki[0], b'{"a": 1}', "application/json", "utf-8"))
    body = json.dumps({"a": 2}).encode()
    tampered = serializer._pack(
        body, "application/json", "utf-8", signer=raw["signer"], signature=raw["signature"]
    )
    with pytest.raises(SecurityError, match="Unable to deserialize"):
        serializer.deserialize(tampered)


def test_unsafe_serializers_are_gone_from_a_fleet_process() -> None:
    forget_unsafe_serializers()
    forget_unsafe_serializers()  # idempotent
    for name in ("pickle", "yaml", "msgpack"):
        assert name not in registry.name_to_type
    assert "application/x-python-serialize" not in registry._decoders
    assert "json" in registry.name_to_type


def test_the_signed_context_binds_every_header_and_an_expiry() -> None:
    context = signed_context(HEADERS, NOW, 600)
    assert {k: context[k] for k in BOUND_HEADERS} == {
        "task": "moonmind_codex.codex_phase",
        "id": "t-1",
        "run": "run-1",
        "phase": "plan",
        "attempt": 2,
    }
    assert (context["signed_at"], context["expires"]) == (NOW, NOW + 600)
    assert context_refusal([[], {}, {SIGNED_CONTEXT: context}], HEADERS, NOW + 599) is None


@pytest.mark.parametrize("header", sorted(BOUND_HEADERS.values()))
def test_a_message_whose_header_differs_from_the_signed_one_is_refused(header: str) -> None:
    body = [[], {}, {SIGNED_CONTEXT: signed_context(HEADERS, NOW, 600)}]
    reason = context_refusal(body, HEADERS | {header: "other"}, NOW)
    assert reason is not None and f"header {header}='other'" in reason
    assert "replayed or altered" in reason
    # A header dropped is a difference too.
    dropped = {k: v for k, v in HEADERS.items() if k != header}
    assert context_refusal(body, dropped, NOW) is not None


def test_a_message_without_run_headers_is_bound_to_having_none() -> None:
    plain = {"task": "moonmind_codex.ping", "id": "p-1"}
    body = [[], {}, {SIGNED_CONTEXT: signed_context(plain, NOW, 60)}]
    assert context_refusal(body, plain, NOW) is None
    assert context_refusal(body, plain | {"moonmind_codex_run": "r"}, NOW) is not None


def test_an_expired_message_is_refused_with_when() -> None:
    body = [[], {}, {SIGNED_CONTEXT: signed_context(HEADERS, NOW, 600)}]
    reason = context_refusal(body, HEADERS, NOW + 601)
    assert reason is not None and reason.startswith("the message expired at 2027-01-15T08:")


def test_a_message_signed_in_the_future_is_refused() -> None:
    body = [[], {}, {SIGNED_CONTEXT: signed_context(HEADERS, NOW + 3600, 86400)}]
    reason = context_refusal(body, HEADERS, NOW)
    assert reason is not None and "in the future" in reason
    # Within the allowed clock skew it is accepted.
    near = [[], {}, {SIGNED_CONTEXT: signed_context(HEADERS, NOW + 60, 600)}]
    assert context_refusal(near, HEADERS, NOW) is None


@pytest.mark.parametrize(
    "body",
    [
        [[], {}, {}],
        [[], {}, {SIGNED_CONTEXT: "x"}],
        [[], {}],
        {"args": []},
        "text",
        [[], {}, None],
    ],
)
def test_a_body_without_a_signed_context_is_refused(body: Any) -> None:
    reason = context_refusal(body, HEADERS, NOW)
    assert reason is not None and "no signed context" in reason


@pytest.mark.parametrize("expires", [None, "2030", True, float("inf"), float("nan")])
def test_a_context_without_a_valid_expiry_is_refused(expires: Any) -> None:
    context = signed_context(HEADERS, NOW, 600) | {"expires": expires}
    reason = context_refusal([[], {}, {SIGNED_CONTEXT: context}], HEADERS, NOW)
    assert reason == "the signed context has no valid expiry"


def signing_app_settings(pki: tuple[Identity, Path], tmp_path: Path, **extra: Any) -> Settings:
    """A signing app's settings on kombu's in-memory transport, with a throw-away run store."""
    identity, trusted = pki
    return Settings(
        broker_url="memory://",
        database_url=f"sqlite:///{tmp_path / 'runs.sqlite3'}",
        signing_key_path=identity.key,
        signing_cert_path=identity.cert,
        signing_trust_dir=trusted,
        **extra,
    )


def test_a_signing_app_puts_the_context_of_what_it_sends_in_the_signed_body(
    pki: tuple[Identity, Path], tmp_path: Path
) -> None:
    """A real Celery app with signing on, on kombu's in-memory transport (the message, not the
    broker, is under test): the context matches the headers it sent, custom ones included."""
    app = create_app(
        signing_app_settings(pki, tmp_path, signed_message_ttl_seconds=120), sticky=False
    )
    sent: list[Any] = []
    with app.connection_for_write() as conn:
        app.send_task(
            "moonmind_codex.ping",
            args=["v"],
            headers={"moonmind_codex_run": "r-9", "moonmind_codex_attempt": 3},
            connection=conn,
            queue="codex-0",
        )
        queue = conn.SimpleQueue("codex-0")
        message = queue.get(timeout=5)
        sent.append(message)
        message.ack()
        queue.close()
    message = sent[0]
    assert message.content_type == "application/data"
    body = message.decode()
    context = body[2][SIGNED_CONTEXT]
    assert context["run"] == "r-9" and context["attempt"] == 3 and context["phase"] is None
    assert context["task"] == "moonmind_codex.ping" and context["id"] == message.headers["id"]
    assert context["expires"] - context["signed_at"] == 120
    assert context_refusal(body, message.headers, context["signed_at"]) is None


def test_a_signing_app_names_its_verifying_consumer_and_amqp_classes_by_importable_paths(
    pki: tuple[Identity, Path], tmp_path: Path
) -> None:
    """Celery imports the worker's consumer and the app's AMQP class by name when a worker
    starts: a name that no longer resolves (a moved module) would start no signed worker."""
    from celery.utils.imports import symbol_by_name

    from moonmind_codex.producer.signing import SignedContextAMQP, VerifyingConsumer

    app = create_app(signing_app_settings(pki, tmp_path), sticky=False)
    assert symbol_by_name(app.conf.worker_consumer) is VerifyingConsumer
    assert symbol_by_name(app.amqp_cls) is SignedContextAMQP
