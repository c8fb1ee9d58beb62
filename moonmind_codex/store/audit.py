"""Audit records: one JSON line when a Codex phase starts and one when it ends.

A task message a worker refuses (unsigned, or a command the policy does not allow) leaves one
``codex_task_refused`` line instead: what it claimed to be, where it arrived, and why.

Each line names the queue, shard, volume and host that served the phase, so any run can be
traced to the login it used. Records go to the ``moonmind_codex.store.audit`` logger and, when
configured, are appended to a JSON Lines file.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from moonmind_codex.core.phase_result import PhaseResult
from moonmind_codex.core.shard import Shard

# The audit trail's logger keeps its name wherever this module lives: operators filter and ship
# it by that name.
log = logging.getLogger("moonmind_codex.audit")

Event = Literal["codex_phase_started", "codex_phase_finished"]


@dataclass(frozen=True)
class AuditRecord:
    event: Event
    run_id: str
    phase: str
    queue: str
    shard: int
    volume: str
    host: str
    worker: str
    task_id: str | None
    container_id: str | None = None
    preflight_status: str | None = None
    outcome: str | None = None
    exit_code: int | None = None
    duration_s: float | None = None
    timestamp: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class RefusalRecord:
    """A task message that started nothing. Its names are as claimed by the sender."""

    task_name: str | None
    task_id: str | None
    queue: str
    reason: str
    worker: str
    shard: int | None = None
    volume: str | None = None
    host: str | None = None
    run_id: str | None = None
    phase: str | None = None
    event: Literal["codex_task_refused"] = "codex_task_refused"
    timestamp: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def started(
    *, run_id: str, phase: str, shard: Shard, worker: str, task_id: str | None
) -> AuditRecord:
    return AuditRecord(
        "codex_phase_started",
        run_id,
        phase,
        shard.queue,
        shard.number,
        shard.volume,
        shard.host,
        worker,
        task_id,
        timestamp=_now(),
    )


def finished(start: AuditRecord, result: PhaseResult, duration_s: float) -> AuditRecord:
    return replace(
        start,
        event="codex_phase_finished",
        outcome=result.outcome,
        preflight_status=result.preflight_status,
        container_id=result.container_id,
        exit_code=result.exit_code,
        duration_s=round(duration_s, 3),
        timestamp=_now(),
    )


def refused(
    *,
    task_name: str | None,
    task_id: str | None,
    queue: str,
    reason: str,
    worker: str,
    shard: Shard | None = None,
    run_id: str | None = None,
    phase: str | None = None,
) -> RefusalRecord:
    return RefusalRecord(
        task_name=task_name,
        task_id=task_id,
        queue=queue,
        reason=reason,
        worker=worker,
        shard=shard.number if shard else None,
        volume=shard.volume if shard else None,
        host=shard.host if shard else None,
        run_id=run_id,
        phase=phase,
        timestamp=_now(),
    )


def emit(record: AuditRecord | RefusalRecord, audit_log: Path | None) -> None:
    line = record.to_json()
    log.info(line)
    if audit_log is not None:
        audit_log.parent.mkdir(parents=True, exist_ok=True)
        # One write() of a whole line with O_APPEND: concurrent workers never interleave lines.
        fd = os.open(audit_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, (line + "\n").encode("utf-8"))
        finally:
            os.close(fd)


def read_records(audit_log: Path) -> list[dict[str, Any]]:
    """All records of a JSON Lines audit file (for tests, reports and operators)."""
    if not audit_log.exists():
        return []
    with audit_log.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
