"""Signed task messages: only the fleet's producers (and its workers) can start a Codex job.

A broker password lets its holder publish to a shard's queue; it must not let them run a
command with the shard's login. With signing on, every task message is serialized with Celery's
``auth`` serializer (an RSA signature over the JSON body and the signer's certificate id), and
a worker accepts a message only when a certificate in its trust directory verifies it.

Celery would find a bad message only in the pool process, after the message was handed over,
and would report it as a failed task. :class:`VerifyingConsumer` checks it first, in the
consumer: a message that is unsigned, signed by an unknown certificate or tampered with is
acknowledged (so it is not redelivered forever), logged as one line and written to the audit
log as ``codex_task_refused``; no record, no job container.

Celery's own ``auth`` serializer signs only the body: the inner content type travels unsigned
beside it and the body is then decoded with ``force=True``, past the disabled-serializer list.
A message signed with any trusted key but marked ``application/x-python-serialize`` would run
arbitrary Python in the worker, which holds the engine's socket. :class:`JsonOnlySerializer`
replaces it under the same name and wire format: after the signature is verified it refuses
every inner content type but JSON and decodes JSON itself, never through the registry; and
:func:`forget_unsafe_serializers` removes pickle, YAML and msgpack from every process that
builds the fleet's app.

Message headers are not signed either (the task name, its id, the run's phase headers). The
sender therefore copies them, with an expiry, into the signed body (:data:`SIGNED_CONTEXT`, in
the embedded options every protocol-2 task message carries), and the consumer refuses a message
whose headers differ from what was signed, or that has expired: a captured message cannot be
replayed under another task name, id or phase, nor after its expiry.
"""

from __future__ import annotations

import logging
import math
import socket
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from celery import Celery
from celery.app.amqp import AMQP
from celery.exceptions import SecurityError
from celery.security.certificate import Certificate, FSCertStore
from celery.security.key import PrivateKey
from celery.security.serialization import SecureSerializer
from celery.security.utils import reraise_errors
from celery.worker.consumer import Consumer
from kombu.serialization import loads, registry
from kombu.utils.json import loads as json_loads

from moonmind_codex.settings import Settings
from moonmind_codex.store import audit

log = logging.getLogger("moonmind_codex.producer.signing")

SIGNED_SERIALIZER = "auth"
# Results travel back on the producer's own reply queue (the rpc backend), which no other
# broker user can read: they stay plain JSON.
RESULT_SERIALIZER = "json"
SECURITY_DIGEST = "sha256"
# The only inner content type a signed body may have.
SIGNED_BODY_CONTENT_TYPE = "application/json"
# Serializers that turn bytes into code or arbitrary objects: removed, not merely disabled.
UNSAFE_SERIALIZERS = ("pickle", "yaml", "msgpack")
# Key of the signed context in a task message's embedded options (the body's third element).
SIGNED_CONTEXT = "moonmind_codex_signed"
# Headers the signed context binds, and the context's own name for each. The run's headers are
# those moonmind_codex.producer.submit sets; ``None`` on both sides when a message has none.
BOUND_HEADERS = {
    "task": "task",
    "id": "id",
    "run": "moonmind_codex_run",
    "phase": "moonmind_codex_phase",
    "attempt": "moonmind_codex_attempt",
}
# A signer's clock may run ahead of the worker's by this much before a message looks forged.
CLOCK_SKEW_SECONDS = 300.0


class UnsafeSignedBody(SecurityError):  # type: ignore[misc]
    """A body signed by a trusted key, but not marked JSON: refused before it is decoded."""


class JsonOnlySerializer(SecureSerializer):  # type: ignore[misc]
    """Celery's ``auth`` serializer, decoding only JSON bodies after their signature verified."""

    def deserialize(self, data: Any) -> Any:
        with reraise_errors("Unable to deserialize: {0!r}", (Exception,)):
            payload = self._unpack(data)
            self._cert_store[payload["signer"]].verify(
                payload["body"], payload["signature"], self._digest
            )
        inner = payload["content_type"]
        if inner != SIGNED_BODY_CONTENT_TYPE:
            raise UnsafeSignedBody(
                f"the signed body's content type is {inner[:100]!r}; signed task messages carry "
                f"{SIGNED_BODY_CONTENT_TYPE} only (pickle, YAML and msgpack are never decoded)"
            )
        with reraise_errors("signed body is not JSON: {0!r}", (Exception,)):
            return json_loads(bytes(payload["body"]).decode("utf-8"))  # type: ignore[no-untyped-call]


def forget_unsafe_serializers() -> None:
    """Remove pickle, YAML and msgpack from this process's kombu registry (idempotent)."""
    for name in UNSAFE_SERIALIZERS:
        if name in registry.name_to_type:
            registry.unregister(name)  # type: ignore[no-untyped-call]


def _register_json_only_auth(key: str, cert: str, store: str) -> None:
    with open(key, encoding="utf-8") as key_file, open(cert, encoding="utf-8") as cert_file:
        serializer = JsonOnlySerializer(
            PrivateKey(key_file.read()),
            Certificate(cert_file.read()),
            FSCertStore(store),
            SECURITY_DIGEST,
            serializer="json",
        )
    registry.register(  # type: ignore[no-untyped-call]
        SIGNED_SERIALIZER,
        serializer.serialize,
        serializer.deserialize,
        content_type="application/data",
        content_encoding="utf-8",
    )


def signed_context(headers: Mapping[str, Any], now: float, ttl_s: float) -> dict[str, Any]:
    """What the sender signs about a message: its bound headers and when it expires."""
    context = {name: headers.get(header) for name, header in BOUND_HEADERS.items()}
    context["signed_at"] = now
    context["expires"] = now + ttl_s
    return context


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def context_refusal(body: Any, headers: Mapping[str, Any], now: float) -> str | None:
    """Why a verified body's signed context does not cover this message, or None."""
    embed = body[2] if isinstance(body, list | tuple) and len(body) == 3 else None
    context = embed.get(SIGNED_CONTEXT) if isinstance(embed, dict) else None
    if not isinstance(context, dict):
        return (
            "the signed body carries no signed context (task, id, run, phase, attempt, expiry); "
            "it was sent by a producer older than this worker: upgrade it, then "
            "`moonmind-codex runs retry` the run"
        )
    for name, header in BOUND_HEADERS.items():
        if context.get(name) != headers.get(header):
            return (
                f"header {header}={str(headers.get(header))[:100]!r} differs from the signed "
                f"{name} {str(context.get(name))[:100]!r}: a replayed or altered message"
            )
    expires, signed_at = _seconds(context.get("expires")), _seconds(context.get("signed_at"))
    if expires is None or signed_at is None:
        return "the signed context has no valid expiry"
    if now > expires:
        return f"the message expired at {_when(expires)} (signed at {_when(signed_at)})"
    if signed_at > now + CLOCK_SKEW_SECONDS:
        return f"the message is signed at {_when(signed_at)}, in the future: check the clocks"
    return None


def _seconds(value: Any) -> float | None:
    """A finite number of seconds, or None (JSON has no other numbers to trust here)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


class SignedContextAMQP(AMQP):  # type: ignore[misc]
    """Celery's message sender, adding the signed context to every task message it sends."""

    def _create_task_sender(self) -> Callable[..., Any]:
        send = super()._create_task_sender()
        settings: Settings = self.app.moonmind_codex_settings

        def send_with_context(producer: Any, name: str, message: Any, *args: Any, **kw: Any) -> Any:
            headers, _, body, _ = message
            # The headers as they will be sent: send_task_message merges the custom ones last.
            final = {**headers, **(kw.get("headers") or {})}
            context = signed_context(final, time.time(), settings.signed_message_ttl_seconds)
            body[2][SIGNED_CONTEXT] = context
            return send(producer, name, message, *args, **kw)

        return send_with_context


def configure_signing(app: Celery, settings: Settings) -> None:
    """Sign what ``app`` sends and accept only signed task messages (when configured)."""
    key, cert, trust = (
        settings.signing_key_path,
        settings.signing_cert_path,
        settings.signing_trust_dir,
    )
    if key is None or cert is None or trust is None:
        return
    store = str(trust / "*.pem")
    app.conf.update(
        task_serializer=SIGNED_SERIALIZER,
        accept_content=[SIGNED_SERIALIZER],
        result_serializer=RESULT_SERIALIZER,
        result_accept_content=[RESULT_SERIALIZER],
        security_key=str(key),
        security_certificate=str(cert),
        security_cert_store=store,
        security_digest=SECURITY_DIGEST,
        worker_consumer=f"{__name__}:VerifyingConsumer",
    )
    # Disables every serializer but JSON (results) process-wide, then registers `auth`...
    app.setup_security(
        allowed_serializers=[RESULT_SERIALIZER],
        key=str(key),
        cert=str(cert),
        store=store,
        digest=SECURITY_DIGEST,
    )
    # ... which is replaced at once by the JSON-only one, under the same name and wire format.
    _register_json_only_auth(str(key), str(cert), store)
    app.moonmind_codex_settings = settings
    if "amqp" in app.__dict__:  # pragma: no cover - create_app configures before any send
        raise RuntimeError("configure_signing must run before the app sends a message")
    app.amqp_cls = f"{__name__}:SignedContextAMQP"


def refusal_reason(message: Any, accept: list[str], now: float | None = None) -> str | None:
    """Why ``message`` must not run (unsigned, unknown signer, tampered, not JSON, replayed
    under other headers, expired), or None."""
    try:
        body = loads(  # type: ignore[no-untyped-call]
            message.body, message.content_type, message.content_encoding, accept=accept
        )
    except Exception as exc:  # any failure to verify is a refusal
        detail = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        if message.content_type != "application/data":
            return f"not signed (content type {message.content_type!r}): {detail}"
        # kombu wraps the serializer's error: DecodeError(UnsafeSignedBody(...)).
        if any(isinstance(arg, UnsafeSignedBody) for arg in (exc, *exc.args)):
            return f"signed body refused: {detail}"
        return f"signature not verified: {detail}"
    return context_refusal(body, message.headers or {}, time.time() if now is None else now)


class VerifyingConsumer(Consumer):  # type: ignore[misc]
    """Celery's consumer, refusing task messages that no trusted certificate signed."""

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Any:
        handle = super().create_task_handler(*args, **kwargs)
        accept = list(self.app.conf.accept_content)

        def on_task_received(message: Any) -> Any:
            reason = refusal_reason(message, accept)
            if reason is None:
                return handle(message)
            self._refuse(message, reason)
            return None

        return on_task_received

    def _refuse(self, message: Any, reason: str) -> None:
        headers = message.headers or {}
        delivery = message.delivery_info or {}
        settings: Settings | None = getattr(self.app, "moonmind_codex_settings", None)
        record = audit.refused(
            task_name=str(headers.get("task", ""))[:200] or None,
            task_id=str(headers.get("id", ""))[:200] or None,
            queue=str(delivery.get("routing_key", "")),
            reason=reason,
            shard=settings.served_shard if settings and settings.shard is not None else None,
            worker=self.hostname or socket.gethostname(),
        )
        log.error(
            "refused task message %s (%s) on queue %s: %s; nothing was started",
            record.task_id,
            record.task_name,
            record.queue,
            reason,
        )
        try:
            audit.emit(record, settings.audit_log if settings else None)
        except OSError as exc:
            log.error("could not write the refusal to the audit log: %s", exc)
        # Acknowledged, not requeued: a bad message would otherwise come back forever.
        message.ack()
