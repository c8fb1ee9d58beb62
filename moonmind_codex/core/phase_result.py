"""The typed result of one phase attempt: one outcome type for every way a phase can end.

Pure (no I/O): the worker makes it, the audit records it, the Celery result is its dict.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from moonmind_codex.core.shard import Shard
from moonmind_codex.core.states import PhaseOutcome


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
    # True when a redelivery found this attempt already ended and returned its record.
    replayed: bool = False
    # For blocked and misrouted: what happened and the fix.
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON (the Celery result): the shard's four values beside the outcome."""
        own = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "shard"}
        return {**own, **self.shard.as_fields()}
