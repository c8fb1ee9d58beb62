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
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from celery import Celery
from celery.worker.consumer import Consumer
from kombu.serialization import loads

from moonmind_codex import audit
from moonmind_codex.settings import Settings

log = logging.getLogger("moonmind_codex.signing")

SIGNED_SERIALIZER = "auth"
# Results travel back on the producer's own reply queue (the rpc backend), which no other
# broker user can read: they stay plain JSON.
RESULT_SERIALIZER = "json"
SECURITY_DIGEST = "sha256"


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
        worker_consumer="moonmind_codex.signing:VerifyingConsumer",
    )
    # Disables every serializer but JSON (results) process-wide, then registers `auth`.
    app.setup_security(
        allowed_serializers=[RESULT_SERIALIZER],
        key=str(key),
        cert=str(cert),
        store=store,
        digest=SECURITY_DIGEST,
    )
    app.moonmind_codex_settings = settings


def refusal_reason(message: Any, accept: list[str]) -> str | None:
    """Why ``message`` must not run (unsigned, unknown signer, tampered), or None."""
    try:
        loads(  # type: ignore[no-untyped-call]
            message.body, message.content_type, message.content_encoding, accept=accept
        )
    except Exception as exc:  # any failure to verify is a refusal
        detail = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        if message.content_type != "application/data":
            return f"not signed (content type {message.content_type!r}): {detail}"
        return f"signature not verified: {detail}"
    return None


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
