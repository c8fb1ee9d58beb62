"""The run store: runs, their phase attempts and sticky queue assignments, in one database.

SQLAlchemy 2 over SQLite (WAL; one host) or PostgreSQL (producers and workers on several
hosts), chosen by one URL setting (``MOONMIND_CODEX_DATABASE_URL``). :class:`RunStore` holds the
queries about runs here and inherits those about shards (:mod:`.shards`); the tables are in
:mod:`.models`, the engines, migrations and errors in :mod:`.engine`. The schema is owned by
the Alembic migrations in ``moonmind_codex/store/migrations``; ``engine.migrate`` brings a
database to the latest revision (workers and the CLI run it on start-up; ``moonmind-codex db
upgrade`` runs it by hand). Every state change is one transaction.

A phase attempt is recorded before its job container starts and its end is recorded before the
container is removed, so a redelivered phase (a lost ack after a broker restart) finds either
the container or the recorded end, and never starts the job a second time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import (
    case,
    func,
    select,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from moonmind_codex.core.fleet_status import FleetStatus, RunView, fleet_status
from moonmind_codex.core.keepalive import RUN_ID_PREFIX, run_id_prefix
from moonmind_codex.core.shard import Shard
from moonmind_codex.core.states import (
    ATTEMPT_FINAL_STATES,
    OPEN_RUN_STATES,
    RUN_FINAL_STATES,
    run_status,
)
from moonmind_codex.store.engine import (
    STORE_ERRORS,
    StoreUnavailable,
    head_revision,
    make_engine,
    migrate,
    redacted_url,
    sqlite_file,
    unavailable,
)
from moonmind_codex.store.models import (
    PhaseAttempt,
    PhaseAttemptRecord,
    QueueAssignmentRecord,
    RunRecord,
    ShardHealth,
    ShardHealthRecord,
    attempt_of,
    aware,
    aware_or_none,
    health_of,
    utcnow,
)
from moonmind_codex.store.shards import ShardRecords


class RunStore(ShardRecords):
    """Runs, phase attempts, queue assignments and shard health; each method is one transaction."""

    @classmethod
    def open(cls, url: str, *, upgrade: bool = True) -> RunStore:
        engine = make_engine(url)
        if upgrade:
            migrate(engine)
        return cls(engine)

    @classmethod
    def open_existing(cls, url: str) -> RunStore:
        """Open a store that exists at the latest schema; create, migrate and change nothing.

        For readers (``status``, ``metrics``): a mistyped URL must not read as an empty, healthy
        fleet. Raises :class:`StoreUnavailable`, whose message never holds a password.
        """
        shown = redacted_url(url)
        database = sqlite_file(url)
        if database is not None and not database.is_file():
            raise StoreUnavailable(f"no run store at {shown} (the file does not exist)")
        engine: Engine | None = None
        try:
            engine = make_engine(url, prepare=False)
            with engine.connect() as connection:
                revision = connection.execute(
                    text("SELECT version_num FROM alembic_version")
                ).scalar()
        except SQLAlchemyError as exc:
            if engine is not None:
                engine.dispose()
            raise unavailable(url, exc) from None
        head = head_revision()
        if revision != head:
            engine.dispose()
            raise StoreUnavailable(
                f"the run store at {shown} is at schema revision {revision}, this moonmind-codex "
                f"reads {head}: run `moonmind-codex db upgrade`"
            )
        return cls(engine)

    # Sticky queue assignments (the router's AssignmentStore protocol).

    def queue_for_run(self, run_id: str) -> str | None:
        with self._transaction() as session:
            row = session.get(QueueAssignmentRecord, run_id)
            return None if row is None else row.queue

    def assign(self, run_id: str, queue: str) -> str:
        """Record ``queue`` for ``run_id`` unless one is recorded; return the recorded one."""
        try:
            with self._transaction() as session:
                if session.get(QueueAssignmentRecord, run_id) is None:
                    session.add(QueueAssignmentRecord(run_id=run_id, queue=queue))
        except IntegrityError:
            pass  # another producer recorded it first: theirs stands
        recorded = self.queue_for_run(run_id)
        return queue if recorded is None else recorded

    # Runs.

    def ensure_run(self, run_id: str, **fields: Any) -> None:
        """Create the run record if it does not exist (ad-hoc phases get one too)."""
        try:
            with self._transaction() as session:
                if session.get(RunRecord, run_id) is None:
                    session.add(RunRecord(id=run_id, **fields))
        except IntegrityError:
            pass  # created concurrently

    def run_started_on(
        self, run_id: str, *, queue: str, shard: int, volume: str, host: str
    ) -> None:
        """A phase of the run reached its shard: record where, and that the run is running."""
        with self._transaction() as session:
            row = session.get(RunRecord, run_id)
            if row is None:
                raise KeyError(run_id)
            row.queue, row.shard, row.volume, row.host = queue, shard, volume, host
            if row.started_at is None:
                row.started_at = utcnow()
            if row.status == "pending":
                row.status = "running"

    def update_run(self, run_id: str, **fields: Any) -> None:
        with self._transaction() as session:
            row = session.get(RunRecord, run_id)
            if row is None:
                raise KeyError(run_id)
            for name, value in fields.items():
                setattr(row, name, value)

    def get_run(self, run_id: str) -> RunRecord | None:
        with self._transaction() as session:
            return session.get(RunRecord, run_id)

    def list_runs(
        self, *, status: str | None = None, shard: int | None = None, limit: int = 100
    ) -> list[RunRecord]:
        query = select(RunRecord).order_by(RunRecord.created_at.desc()).limit(limit)
        if status is not None:
            query = query.where(RunRecord.status == status)
        if shard is not None:
            query = query.where(RunRecord.shard == shard)
        with self._transaction() as session:
            return list(session.scalars(query))

    # Phase attempts.

    def attempts(self, run_id: str, phase: str | None = None) -> list[PhaseAttempt]:
        query = select(PhaseAttemptRecord).where(PhaseAttemptRecord.run_id == run_id)
        if phase is not None:
            query = query.where(PhaseAttemptRecord.phase == phase)
        query = query.order_by(PhaseAttemptRecord.position, PhaseAttemptRecord.attempt)
        with self._transaction() as session:
            return [attempt_of(row) for row in session.scalars(query)]

    def begin_attempt(
        self,
        run_id: str,
        phase: str,
        attempt: int,
        *,
        task_id: str | None,
        container_name: str,
        log_path: str,
        position: int = 0,
    ) -> PhaseAttempt:
        """Record that this attempt is about to run, or return how it already stands.

        The caller starts a job only when the returned attempt is ``running`` under its own
        task and no final state was recorded; a final attempt is never run again.
        """
        now = utcnow()
        try:
            with self._transaction() as session:
                row = self._attempt_row(session, run_id, phase, attempt)
                if row is None:
                    row = PhaseAttemptRecord(
                        run_id=run_id,
                        phase=phase,
                        attempt=attempt,
                        position=position,
                        status="running",
                        task_id=task_id,
                        container_name=container_name,
                        log_path=log_path,
                        started_at=now,
                    )
                    session.add(row)
                elif row.status not in ATTEMPT_FINAL_STATES:
                    row.status, row.task_id = "running", task_id
                    row.container_name, row.log_path = container_name, log_path
                    row.started_at = row.started_at or now
                session.flush()
                return attempt_of(row)
        except IntegrityError:
            # A concurrent delivery inserted it first: read what it recorded.
            with self._transaction() as session:
                found = self._attempt_row(session, run_id, phase, attempt)
                if found is None:  # pragma: no cover - the insert that beat us was rolled back
                    raise
                return attempt_of(found)

    def finish_attempt(
        self,
        run_id: str,
        phase: str,
        attempt: int,
        *,
        status: str,
        exit_code: int | None = None,
        error: str | None = None,
    ) -> PhaseAttempt:
        """Record the end of an attempt; a final state already recorded is kept."""
        with self._transaction() as session:
            row = self._attempt_row(session, run_id, phase, attempt)
            if row is None:
                raise KeyError((run_id, phase, attempt))
            if row.status not in ATTEMPT_FINAL_STATES:
                row.status, row.exit_code, row.error = status, exit_code, error
                row.finished_at = utcnow()
            session.flush()
            return attempt_of(row)

    def settle_run(self, run_id: str) -> str:
        """Derive the run's status from the latest attempt of each of its phases; store it."""
        with self._transaction() as session:
            run, rows = self._run_and_attempts(session, run_id)
            latest_status: dict[str, tuple[int, str]] = {}
            for row in rows:
                if row.phase not in latest_status or row.attempt > latest_status[row.phase][0]:
                    latest_status[row.phase] = (row.attempt, row.status)
            status = run_status([state for _, state in latest_status.values()], run.status)
            if status != run.status:
                run.status = status
                if status in RUN_FINAL_STATES:
                    run.finished_at = utcnow()
            return status

    def plan_attempts(self, run_id: str, planned: Sequence[tuple[str, int, int, str]]) -> None:
        """Record pending attempts ``(phase, position, attempt, task_id)`` before sending."""
        with self._transaction() as session:
            for phase, position, attempt, task_id in planned:
                if self._attempt_row(session, run_id, phase, attempt) is None:
                    session.add(
                        PhaseAttemptRecord(
                            run_id=run_id,
                            phase=phase,
                            position=position,
                            attempt=attempt,
                            task_id=task_id,
                            status="pending",
                        )
                    )

    def latest_states(self, run_id: str) -> dict[str, PhaseAttempt]:
        """The latest attempt of each phase of the run."""
        found: dict[str, PhaseAttempt] = {}
        for attempt in self.attempts(run_id):
            if attempt.phase not in found or attempt.attempt > found[attempt.phase].attempt:
                found[attempt.phase] = attempt
        return found

    def cancel_run(self, run_id: str) -> list[PhaseAttempt]:
        """Mark the run and its open attempts cancelled; return the attempts that were open."""
        with self._transaction() as session:
            run, rows = self._run_and_attempts(session, run_id)
            opened = [attempt_of(row) for row in rows if row.status not in ATTEMPT_FINAL_STATES]
            now = utcnow()
            for row in rows:
                if row.status not in ATTEMPT_FINAL_STATES:
                    row.status, row.finished_at = "cancelled", now
                    row.error = "cancelled by an operator"
            run.status, run.finished_at = "cancelled", now
            return opened

    def run_cancelled(self, run_id: str) -> bool:
        with self._transaction() as session:
            run = session.get(RunRecord, run_id)
            return run is not None and run.status == "cancelled"

    # Fleet status (moonmind_codex.core.fleet_status shapes what these return).

    def shard_healths(self) -> list[ShardHealth]:
        """Every volume's recorded health, by volume."""
        query = select(ShardHealthRecord).order_by(ShardHealthRecord.volume)
        with self._transaction() as session:
            return [health_of(row) for row in session.scalars(query)]

    def open_runs(self) -> list[RunView]:
        """Every pending or running run (keep-alives too), oldest first."""
        query = (
            select(RunRecord)
            .where(RunRecord.status.in_(OPEN_RUN_STATES))
            .order_by(RunRecord.created_at, RunRecord.id)
        )
        with self._transaction() as session:
            return [_run_view(row) for row in session.scalars(query)]

    def latest_runs_by_shard(self, shards: Sequence[int]) -> dict[int, RunView]:
        """The latest run (not a keep-alive) a phase of which reached each of ``shards``."""
        return self._latest_per_shard(
            shards, lambda shard: (RunRecord.shard == shard, ~_is_keepalive(RunRecord.id))
        )

    def latest_keepalives(self, shards: Sequence[int]) -> dict[int, RunView]:
        """The latest keep-alive run of each of ``shards`` (``keepalive-<shard>-...``)."""
        return self._latest_per_shard(
            shards,
            lambda shard: (RunRecord.id.startswith(run_id_prefix(shard), autoescape=True),),
        )

    def _latest_per_shard(
        self, shards: Sequence[int], conditions: Callable[[int], tuple[Any, ...]]
    ) -> dict[int, RunView]:
        found = {}
        with self._transaction() as session:
            for shard in shards:
                row = session.scalars(
                    select(RunRecord)
                    .where(*conditions(shard))
                    .order_by(RunRecord.created_at.desc(), RunRecord.id.desc())
                    .limit(1)
                ).one_or_none()
                if row is not None:
                    found[shard] = _run_view(row)
        return found

    def run_counts(self) -> dict[tuple[str, bool], int]:
        """How many runs have each status: ``{(status, is a keep-alive): number}``."""
        keepalive = case((_is_keepalive(RunRecord.id), 1), else_=0).label("keepalive")
        query = select(RunRecord.status, keepalive, func.count()).group_by(
            RunRecord.status, keepalive
        )
        with self._transaction() as session:
            return {(status, bool(flag)): number for status, flag, number in session.execute(query)}

    @staticmethod
    def _run_and_attempts(
        session: Session, run_id: str
    ) -> tuple[RunRecord, list[PhaseAttemptRecord]]:
        run = session.get(RunRecord, run_id)
        if run is None:
            raise KeyError(run_id)
        query = select(PhaseAttemptRecord).where(PhaseAttemptRecord.run_id == run_id)
        return run, list(session.scalars(query))

    @staticmethod
    def _attempt_row(
        session: Session, run_id: str, phase: str, attempt: int
    ) -> PhaseAttemptRecord | None:
        return session.scalars(
            select(PhaseAttemptRecord).where(
                PhaseAttemptRecord.run_id == run_id,
                PhaseAttemptRecord.phase == phase,
                PhaseAttemptRecord.attempt == attempt,
            )
        ).one_or_none()


def _is_keepalive(column: Any) -> Any:
    return column.startswith(RUN_ID_PREFIX, autoescape=True)


def _run_view(row: RunRecord) -> RunView:
    return RunView(
        run_id=row.id,
        status=row.status,
        queue=row.queue,
        shard=row.shard,
        host=row.host,
        created_at=aware(row.created_at),
        started_at=aware_or_none(row.started_at),
        finished_at=aware_or_none(row.finished_at),
    )


def latest(attempts: Sequence[PhaseAttempt]) -> PhaseAttempt | None:
    return max(attempts, key=lambda a: a.attempt, default=None)


def read_fleet_status(database_url: str, shards: Sequence[Shard]) -> FleetStatus:
    """The fleet's status from the run store at ``database_url``, opened read-only (nothing
    created or migrated); :class:`StoreUnavailable` when it cannot be read."""
    numbers = [s.number for s in shards]
    store = RunStore.open_existing(database_url)
    try:
        return fleet_status(
            shards,
            healths=store.shard_healths(),
            fences=store.login_fences(),
            latest_runs=store.latest_runs_by_shard(numbers),
            latest_keepalives=store.latest_keepalives(numbers),
            open_runs=store.open_runs(),
            counts=store.run_counts(),
        )
    except STORE_ERRORS as exc:  # the database went away, or a table is missing
        raise unavailable(database_url, exc) from None
    finally:
        store.engine.dispose()
