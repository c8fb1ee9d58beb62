"""One Codex phase on a worker: audit start, pre-flight, job container, audit end.

Exactly one start and one end record per phase, whatever happens in between.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from moonmind_codex import audit
from moonmind_codex.jobs import JobSpec, launch_job
from moonmind_codex.preflight import run_preflight
from moonmind_codex.settings import Settings

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


def run_phase(
    settings: Settings,
    client: Any,
    request: PhaseRequest,
    *,
    worker: str,
    task_id: str | None,
    delivered_on: str | None,
) -> dict[str, Any]:
    shard = settings.own_shard
    queue = settings.queue_for_shard(shard)
    if delivered_on is not None and delivered_on != queue:
        raise CodexPhaseMisrouted(
            f"phase {request.phase} of run {request.run_id} arrived on queue {delivered_on}, but "
            f"this worker serves {queue}; check the producer's shard count and queue mode"
        )
    volume = settings.volume_for_shard(shard)
    start = audit.started(
        run_id=request.run_id,
        phase=request.phase,
        queue=queue,
        shard=shard,
        volume=volume,
        host=settings.host_name,
        worker=worker,
        task_id=task_id,
    )
    audit.emit(start, settings.audit_log)
    began = time.monotonic()
    outcome, preflight_status = "failed", None
    container_id: str | None = None
    exit_code: int | None = None
    try:
        check = run_preflight(settings, shard, client)
        preflight_status = check.status
        if check.blocked:
            outcome = "blocked"
            log.error("%s", check.message())
            raise CodexPhaseBlocked(check.message())
        if check.status == "warn":
            log.warning("%s", check.message())
        spec = JobSpec(
            run_id=request.run_id,
            phase=request.phase,
            command=request.command,
            shard=shard,
            queue=queue,
            volume=volume,
            timeout_s=request.timeout_s or settings.job_timeout_seconds,
        )
        result = launch_job(settings, spec, client)
        container_id, exit_code, outcome = result.container_id, result.exit_code, result.outcome
        return {
            "run_id": request.run_id,
            "phase": request.phase,
            "queue": queue,
            "shard": shard,
            "volume": volume,
            "host": settings.host_name,
            "worker": worker,
            "container_id": result.container_id,
            "container_name": result.container_name,
            "exit_code": result.exit_code,
            "outcome": result.outcome,
            "preflight_status": check.status,
            "log_path": str(result.log_path),
            "duration_s": result.duration_s,
            "reused_existing": result.reused_existing,
        }
    finally:
        audit.emit(
            audit.finished(
                start,
                outcome=outcome,
                preflight_status=preflight_status,
                container_id=container_id,
                exit_code=exit_code,
                duration_s=time.monotonic() - began,
            ),
            settings.audit_log,
        )
