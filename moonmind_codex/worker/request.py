"""A Codex phase's request (the task's arguments, checked at the edge) and how a phase ends
when it does not succeed (the exceptions the task raises)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from moonmind_codex.core.phase_result import PhaseResult
from moonmind_codex.core.runs import (
    RunDefinitionError,
    check_command,
    check_id,
    check_optional_text,
    check_timeout,
)
from moonmind_codex.core.shard import Shard
from moonmind_codex.core.states import PhaseOutcome

# Attempts and positions beyond this are not a run anyone made (and would not fit a column).
MAX_ORDINAL = 100_000


class CodexPhaseBlocked(RuntimeError):
    """The pre-flight login check failed; the phase did not start. The message is the fix."""


class CodexPhaseMisrouted(RuntimeError):
    """A phase arrived on a queue this worker does not own; it was refused untouched."""


class CodexPhaseFailed(RuntimeError):
    """The job ran and did not succeed (non-zero exit, timeout, cancellation): the run stops."""


class PhaseRequestError(ValueError):
    """The phase's task arguments are not valid; nothing was recorded or started."""


class PhaseBookkeepingError(RuntimeError):
    """The phase's records (run store, audit, log) could not be written: never a success."""


@dataclass(frozen=True)
class PhaseRequest:
    run_id: str
    phase: str
    command: Sequence[str]
    timeout_s: float | None = None
    # Which attempt of this phase (``runs retry`` makes the next one); redeliveries and busy
    # retries belong to the same attempt.
    attempt: int = 1
    position: int = 0
    repository: str | None = None
    affinity_key: str | None = None

    def __post_init__(self) -> None:
        """Check the task's arguments at the edge, before anything is recorded or started."""
        for name in ("run_id", "phase"):
            try:
                check_id(getattr(self, name), name)
            except RunDefinitionError as exc:
                raise PhaseRequestError(f"{exc}; nothing was started") from None
        try:
            # A string is never taken as a command list: "echo hi" would run "e".
            check_command(self.command)
            check_timeout(self.timeout_s)
            for key in ("repository", "affinity_key"):
                check_optional_text(getattr(self, key), key)
        except RunDefinitionError as exc:
            raise PhaseRequestError(f"{exc}; nothing was started") from None
        for name, value, minimum in (("attempt", self.attempt, 1), ("position", self.position, 0)):
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or not minimum <= value <= MAX_ORDINAL
            ):
                raise PhaseRequestError(
                    f"{name} must be a whole number in [{minimum}, {MAX_ORDINAL}], got "
                    f"{value!r:.80}; nothing was started"
                )

    def ended(
        self, shard: Shard, worker: str, outcome: PhaseOutcome, **details: Any
    ) -> PhaseResult:
        """How this request's attempt on ``shard`` ended."""
        return PhaseResult(self.run_id, self.phase, shard, worker, outcome, **details)
