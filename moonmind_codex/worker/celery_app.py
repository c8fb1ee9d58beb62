"""The Celery app of Codex worker shards (workers, and producers that use this app).

Producers with their own Celery app need only
:func:`moonmind_codex.producer.router.install_routing`, which imports no Docker code.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Sequence
from typing import Any, NoReturn, cast

from celery import Celery
from kombu.entity import Queue

from moonmind_codex.core.assignments import AssignmentStore
from moonmind_codex.core.messages import busy_too_long
from moonmind_codex.core.policy import command_allowed, refusal
from moonmind_codex.engine.client import DockerUnavailable, connect
from moonmind_codex.producer.recording import install_run_recording
from moonmind_codex.producer.router import fleet_queues, install_routing
from moonmind_codex.producer.signing import configure_signing, forget_unsafe_serializers
from moonmind_codex.producer.submit import CODEX_PHASE_TASK
from moonmind_codex.settings import Settings
from moonmind_codex.store import audit
from moonmind_codex.store.runstore import RunStore
from moonmind_codex.worker.phase import WorkerMemory, run_phase
from moonmind_codex.worker.request import (
    CodexPhaseBlocked,
    CodexPhaseFailed,
    CodexPhaseMisrouted,
    PhaseRequest,
    PhaseRequestError,
)

__all__ = ["CODEX_PHASE_TASK", "PING_TASK", "create_app", "install_routing"]

PING_TASK = "moonmind_codex.ping"
ALLOWED_COMMANDS_SETTING = "MOONMIND_CODEX_ALLOWED_COMMANDS"


def create_app(
    settings: Settings, store: AssignmentStore | None = None, sticky: bool = True
) -> Celery:
    """The app for workers and for producers.

    Producers keep runs sticky through ``store`` (default: the run store at
    ``settings.database_url``); workers pass ``sticky=False`` and record phases in the run
    store, which each worker process opens on first use.
    """
    # Pickle, YAML and msgpack never decode anything in a fleet process, signed or not.
    forget_unsafe_serializers()
    app = Celery("moonmind_codex", broker=settings.broker_url, backend="rpc://")
    if store is None and sticky:
        store = RunStore.open(settings.database_url)
    install_routing(app, settings, store)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # One Codex job per volume at a time: a worker holds one unacked message, acknowledged
        # only when the phase finished, and a lost worker's message goes back to the queue.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        task_default_queue=settings.default_queue,
        task_queues=(
            [Queue(settings.default_queue, durable=True)]  # type: ignore[no-untyped-call]
            if settings.declare_queues
            else fleet_queues(settings)
        ),
        task_create_missing_queues=True,
        broker_connection_retry_on_startup=True,
        result_expires=24 * 3600,
        worker_hijack_root_logger=False,
        worker_enable_remote_control=settings.remote_control,
    )
    tls = broker_tls_options(settings)
    if tls is not None:
        app.conf.broker_use_ssl = tls
    configure_signing(app, settings)
    _register_tasks(app, settings)
    return app


def broker_tls_options(settings: Settings) -> dict[str, Any] | None:
    """Verify the broker's certificate (and its name) on an amqps:// URL; None for plain AMQP."""
    if not settings.broker_url.startswith("amqps://"):
        return None
    # server_hostname None: kombu checks the certificate against the URL's host name.
    options: dict[str, Any] = {"cert_reqs": ssl.CERT_REQUIRED, "server_hostname": None}
    if settings.broker_ca_path is not None:
        options["ca_certs"] = str(settings.broker_ca_path)
    return options


class _WorkerProcess:
    """What a worker process opens on first use (after the prefork pool forked) and keeps."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.memory = WorkerMemory()
        self._client: Any = None
        self._store: RunStore | None = None

    def docker_client(self) -> Any:
        """The engine's client, or None while it cannot be reached (the phase is blocked)."""
        if self._client is None:
            try:
                self._client = connect(self.settings)
            except DockerUnavailable:
                return None
        return self._client

    def run_store(self) -> RunStore:
        if self._store is None:
            self._store = RunStore.open(self.settings.database_url)
        return self._store


def _register_tasks(app: Celery, settings: Settings) -> None:
    process = _WorkerProcess(settings)
    install_run_recording(app, process.run_store)

    # shared=False: these tasks close over this app's settings; Celery must not copy them
    # into every other app in the process (an operator's app, or the next shard's).
    # throws: expected endings, logged as one line without a traceback (bad input is not a bug).
    @app.task(  # type: ignore[untyped-decorator]
        name=CODEX_PHASE_TASK,
        bind=True,
        codex=True,
        shared=False,
        throws=(CodexPhaseBlocked, CodexPhaseFailed, CodexPhaseMisrouted, PhaseRequestError),
    )
    def codex_phase(
        self: Any,
        run_id: str | None = None,
        phase: str | None = None,
        command: Sequence[str] | None = None,
        repository: str | None = None,
        timeout_s: float | None = None,
        affinity_key: str | None = None,
        attempt: int = 1,
        position: int = 0,
        **unexpected: Any,
    ) -> dict[str, Any]:
        if unexpected:
            raise PhaseRequestError(
                f"unknown task arguments {sorted(unexpected)[:5]}; a Codex phase takes run_id, "
                "phase, command, repository, timeout_s, affinity_key, attempt and position; "
                "nothing was started"
            )
        # Whatever the message held: PhaseRequest checks every argument before anything runs.
        request = PhaseRequest(
            run_id=cast(str, run_id),
            phase=cast(str, phase),
            command=cast(Sequence[str], command),
            timeout_s=timeout_s,
            attempt=attempt,
            position=position,
            repository=repository,
            affinity_key=affinity_key,
        )
        return _codex_phase(self, process, request)

    @app.task(name=PING_TASK, bind=True, shared=False)  # type: ignore[untyped-decorator]
    def ping(self: Any, value: Any) -> dict[str, Any]:
        delivery = self.request.delivery_info or {}
        return {
            "value": value,
            "worker": self.request.hostname,
            "queue": delivery.get("routing_key"),
        }


def _codex_phase(task: Any, process: _WorkerProcess, request: PhaseRequest) -> dict[str, Any]:
    """The Codex phase task's work once its arguments are checked: policy, phase, ending."""
    settings = process.settings
    delivery = task.request.delivery_info or {}
    worker = task.request.hostname or socket.gethostname()
    if not command_allowed(request.command, settings.allowed_commands):
        _refuse(task, settings, request, str(delivery.get("routing_key", "")), worker)
    result = run_phase(
        settings,
        process.docker_client(),
        process.run_store(),
        request,
        worker=worker,
        task_id=task.request.id,
        delivered_on=delivery.get("routing_key"),
        memory=process.memory,
    )
    if result.outcome == "misrouted":
        raise CodexPhaseMisrouted(result.message)
    if result.outcome == "blocked":
        raise CodexPhaseBlocked(result.message)
    if result.outcome == "busy":
        if task.request.retries >= settings.busy_max_retries:
            raise CodexPhaseFailed(
                busy_too_long(result.shard, settings.busy_retry_seconds, task.request.retries)
            )
        # The volume's lock is held (an operator's login, a move): wait and retry rather
        # than fail the run; the message goes back to this shard's queue.
        raise task.retry(
            countdown=settings.busy_retry_seconds, max_retries=settings.busy_max_retries
        )
    if result.outcome in ("failed", "timed_out", "cancelled"):
        # Raised, not returned: a chain must not go on to the run's next phase.
        raise CodexPhaseFailed(
            f"phase {request.phase} of run {request.run_id} "
            f"{result.outcome.replace('_', ' ')}"
            f"{'' if result.exit_code is None else f' with exit code {result.exit_code}'} "
            f"on shard {result.shard.number} (volume {result.shard.volume}, host "
            f"{result.shard.host}); log: {result.log_path}"
            + (f"; {result.message}" if result.message else "")
        )
    return result.to_dict()


def _refuse(
    task: Any, settings: Settings, request: PhaseRequest, queue: str, worker: str
) -> NoReturn:
    """A command the policy does not allow: audited, refused, nothing started."""
    reason = refusal(request.command, settings.allowed_commands, ALLOWED_COMMANDS_SETTING)
    refused = audit.refused(
        task_name=CODEX_PHASE_TASK,
        task_id=task.request.id,
        queue=queue,
        reason=reason,
        worker=worker,
        shard=settings.served_shard if settings.shard is not None else None,
        run_id=request.run_id,
        phase=request.phase,
    )
    try:
        audit.emit(refused, settings.audit_log)
    except OSError as exc:
        reason += f" (the refusal could not be written to the audit log: {exc})"
    raise PhaseRequestError(reason)
