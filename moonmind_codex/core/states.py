"""The one vocabulary of states: a run's, a phase attempt's, a job's and a phase's ending.

Pure. The run store's status columns hold these strings; every layer reads them from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

# A run: pending until a phase starts, running while any phase is open, then final. Listed in
# this order (a status the store holds beyond these is listed after them).
RUN_STATUSES = ("pending", "running", "succeeded", "failed", "blocked", "cancelled")
OPEN_RUN_STATES = ("pending", "running")
RUN_FINAL_STATES = frozenset(RUN_STATUSES) - frozenset(OPEN_RUN_STATES)

# A phase attempt: pending, running or busy (waiting for the volume's lock) while open; then
# one final state ("lost": its worker went away and the job was not found again).
RUNNING_ATTEMPT_STATES = ("running", "busy")
ATTEMPT_FINAL_STATES = frozenset(
    {"succeeded", "failed", "timed_out", "blocked", "cancelled", "lost"}
)
# Final attempt states that fail their run.
FAILED_ATTEMPT_STATES = ("failed", "timed_out", "lost")

# How a job container ended, and how a phase delivery ended (misrouted: refused untouched).
JobOutcome = Literal["succeeded", "failed", "timed_out", "busy", "cancelled", "blocked"]
PhaseOutcome = Literal[
    "succeeded", "failed", "timed_out", "busy", "blocked", "misrouted", "cancelled"
]

# A recorded final attempt state, read as the phase outcome a redelivery returns (a state
# missing here, "lost", reads as "failed").
REPLAYED_OUTCOME: dict[str, PhaseOutcome] = {
    "succeeded": "succeeded",
    "failed": "failed",
    "timed_out": "timed_out",
    "blocked": "blocked",
    "cancelled": "cancelled",
}


def run_status(phase_states: Sequence[str], current: str) -> str:
    """A run's status from the latest state of each of its phases."""
    if current == "cancelled":
        return current
    if "blocked" in phase_states:
        return "blocked"
    if any(state in FAILED_ATTEMPT_STATES for state in phase_states):
        return "failed"
    if phase_states and all(state == "succeeded" for state in phase_states):
        return "succeeded"
    if any(state in RUNNING_ATTEMPT_STATES for state in phase_states) or any(
        state == "succeeded" for state in phase_states
    ):
        return "running"
    return current  # nothing decided yet: the run keeps its status
