"""The typed result of one phase attempt: one outcome type for every way a phase can end.

Pure (no I/O): the worker makes it, the audit records it, the Celery result is its dict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from moonmind_codex.settings import Shard

PhaseOutcome = Literal["succeeded", "failed", "timed_out", "busy", "blocked", "misrouted"]


@dataclass(frozen=True)
class PhaseResult:
    """How one attempt of a phase ended, on which shard; the Celery result is its dict."""

    run_id: str
    phase: str
    shard: Shard
    worker: str
    outcome: PhaseOutcome
    preflight_status: str | None = None
    container_id: str | None = None
    container_name: str | None = None
    exit_code: int | None = None
    log_path: str | None = None
    duration_s: float = 0.0
    reused_existing: bool = False
    # For blocked and misrouted: what happened and the fix.
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "phase": self.phase,
            "queue": self.shard.queue,
            "shard": self.shard.number,
            "volume": self.shard.volume,
            "host": self.shard.host,
            "worker": self.worker,
            "container_id": self.container_id,
            "container_name": self.container_name,
            "exit_code": self.exit_code,
            "outcome": self.outcome,
            "preflight_status": self.preflight_status,
            "log_path": self.log_path,
            "duration_s": self.duration_s,
            "reused_existing": self.reused_existing,
            "message": self.message,
        }
