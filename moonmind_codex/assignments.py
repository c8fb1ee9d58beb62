"""Sticky run assignments: once a run has a queue, every later phase of it uses that queue.

Without this, growing the fleet between two phases of a run could move the run to another shard
and so to another login. The producer records the first queue of each run; first writer wins.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
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


class SqliteAssignmentStore:
    """Shared by the producer processes of one host (the database adapter)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS run_queue ("
                " run_id TEXT PRIMARY KEY, queue TEXT NOT NULL,"
                " assigned_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30, isolation_level=None)

    def queue_for_run(self, run_id: str) -> str | None:
        with self._connect() as db:
            row = db.execute("SELECT queue FROM run_queue WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else str(row[0])

    def assign(self, run_id: str, queue: str) -> str:
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "INSERT OR IGNORE INTO run_queue (run_id, queue) VALUES (?, ?)", (run_id, queue)
            )
            row = db.execute("SELECT queue FROM run_queue WHERE run_id = ?", (run_id,)).fetchone()
            db.execute("COMMIT")
        finally:
            db.close()
        return str(row[0])
