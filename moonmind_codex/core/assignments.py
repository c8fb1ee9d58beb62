"""Sticky run assignments: once a run has a queue, every later phase of it uses that queue.

Without this, growing the fleet between two phases of a run could move the run to another shard
and so to another login. The producer records the first queue of each run; first writer wins.
The run store (:class:`moonmind_codex.store.runstore.RunStore`) is the persistent implementation.
"""

from __future__ import annotations

import threading
from typing import Protocol


class AssignmentStore(Protocol):
    def queue_for_run(self, run_id: str) -> str | None: ...

    def assign(self, run_id: str, queue: str) -> str:
        """Record ``queue`` for ``run_id`` unless one is recorded; return the recorded one."""
        ...


class MemoryAssignmentStore:
    """For one producer process (tests, scripts)."""

    def __init__(self) -> None:
        self._runs: dict[str, str] = {}
        self._lock = threading.Lock()

    def queue_for_run(self, run_id: str) -> str | None:
        return self._runs.get(run_id)

    def assign(self, run_id: str, queue: str) -> str:
        with self._lock:
            return self._runs.setdefault(run_id, queue)
