"""One Codex phase on a worker: audit start, pre-flight, job container, audit end.

Exactly one start and one end record per phase that reached its shard, whatever happens in
between; a misrouted phase is refused untouched (it belongs to another shard's audit).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from moonmind_codex import audit
from moonmind_codex.jobs import JobSpec, launch_job
from moonmind_codex.phase_result import PhaseOutcome, PhaseResult
from moonmind_codex.preflight import run_preflight
from moonmind_codex.settings import Settings, Shard

log = logging.getLogger(__name__)


class CodexPhaseBlocked(RuntimeError):
    """The pre-flight login check failed; the phase did not start. The message is the fix."""


class CodexPhaseMisrouted(RuntimeError):
    """A phase arrived on a queue this worker does not own; it was refused untouched."""


@dataclass(frozen=True)
class PhaseRequest:
    run_id: str
    phase: str
    command: Sequence[str]
    timeout_s: float | None = None

    def ended(
        self, shard: Shard, worker: str, outcome: PhaseOutcome, **details: Any
    ) -> PhaseResult:
        """How this request's attempt on ``shard`` ended."""
        return PhaseResult(self.run_id, self.phase, shard, worker, outcome, **details)


def run_phase(
    settings: Settings,
    client: Any,
    request: PhaseRequest,
    *,
    worker: str,
    task_id: str | None,
    delivered_on: str | None,
) -> PhaseResult:
    shard = settings.served_shard
    if delivered_on is not None and delivered_on != shard.queue:
        return request.ended(
            shard,
            worker,
            "misrouted",
            message=(
                f"phase {request.phase} of run {request.run_id} arrived on queue {delivered_on}, "
                f"but this worker serves {shard.queue}; check the producer's shard count and "
                "queue mode"
            ),
        )
    start = audit.started(
        run_id=request.run_id, phase=request.phase, shard=shard, worker=worker, task_id=task_id
    )
    audit.emit(start, settings.audit_log)
    began = time.monotonic()
    # Replaced on every path below; this one stands for a crash in between.
    result = request.ended(shard, worker, "failed")
    try:
        result = _attempt(settings, client, request, shard, worker)
        return result
    finally:
        audit.emit(audit.finished(start, result, time.monotonic() - began), settings.audit_log)


def _attempt(
    settings: Settings, client: Any, request: PhaseRequest, shard: Shard, worker: str
) -> PhaseResult:
    check = run_preflight(settings, shard.number, client)
    if check.blocked:
        log.error("%s", check.message())
        return request.ended(
            shard, worker, "blocked", preflight_status=check.status, message=check.message()
        )
    if check.status == "warn":
        log.warning("%s", check.message())
    spec = JobSpec(
        run_id=request.run_id,
        phase=request.phase,
        command=request.command,
        shard=shard,
        timeout_s=request.timeout_s or settings.job_timeout_seconds,
    )
    job = launch_job(settings, spec, client)
    return request.ended(
        shard,
        worker,
        job.outcome,
        preflight_status=check.status,
        container_id=job.container_id,
        container_name=job.container_name,
        exit_code=job.exit_code,
        log_path=str(job.log_path),
        duration_s=job.duration_s,
        reused_existing=job.reused_existing,
    )
