"""The run store: runs, their phase attempts and sticky queue assignments, in one database.

SQLAlchemy 2 over SQLite (WAL; one host) or PostgreSQL (producers and workers on several
hosts), chosen by one URL setting (``MOONMIND_CODEX_DATABASE_URL``). The schema is owned by the
Alembic migrations in ``moonmind_codex/store/migrations``; :func:`migrate` brings a database to the
latest revision (workers and the CLI run it on start-up; ``moonmind-codex db upgrade`` runs it
by hand). Every state change is one transaction.

A phase attempt is recorded before its job container starts and its end is recorded before the
container is removed, so a redelivered phase (a lost ack after a broker restart) finds either
the container or the recorded end, and never starts the job a second time.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    case,
    create_engine,
    event,
    func,
    make_url,
    select,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from moonmind_codex.core import fence
from moonmind_codex.core.fleet_status import OPEN_RUN_STATES, RunView
from moonmind_codex.core.keepalive import RUN_ID_PREFIX, ShardActivity, run_id_prefix
from moonmind_codex.core.shard import Shard

MIGRATIONS = Path(__file__).with_name("migrations")

# Phase attempt states: the first two are open, the rest final for that attempt.
FINAL_STATES = frozenset({"succeeded", "failed", "timed_out", "blocked", "cancelled", "lost"})
# Attempts still running on a shard (a busy one waits for the volume's lock).
RUNNING_ATTEMPT_STATES = ("running", "busy")
# What a read of the store may raise once it is open (the database went away, a table is
# missing): callers above the store catch these, not the driver's or SQLAlchemy's own.
STORE_ERRORS: tuple[type[Exception], ...] = (SQLAlchemyError,)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class RunRecord(Base):
    __tablename__ = "spec_workflow_runs"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    repository: Mapped[str | None] = mapped_column(String(512))
    affinity_key: Mapped[str | None] = mapped_column(String(512))
    status: Mapped[str] = mapped_column(String(32), default="pending")
    queue: Mapped[str | None] = mapped_column(String(255))
    shard: Mapped[int | None] = mapped_column(Integer)
    volume: Mapped[str | None] = mapped_column(String(255))
    host: Mapped[str | None] = mapped_column(String(255))
    preflight_status: Mapped[str | None] = mapped_column(String(16))
    preflight_message: Mapped[str | None] = mapped_column(Text)
    chain_id: Mapped[str | None] = mapped_column(String(255))
    # The run definition as submitted (JSON): what `runs retry` sends again.
    definition: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PhaseAttemptRecord(Base):
    __tablename__ = "spec_workflow_task_states"
    __table_args__ = (UniqueConstraint("run_id", "phase", "attempt", name="uq_phase_attempt"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("spec_workflow_runs.id", ondelete="CASCADE"), index=True
    )
    phase: Mapped[str] = mapped_column(String(128))
    position: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(32), default="pending")
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    task_id: Mapped[str | None] = mapped_column(String(255))
    container_name: Mapped[str | None] = mapped_column(String(255))
    exit_code: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
    log_path: Mapped[str | None] = mapped_column(String(1024))
    artifact_path: Mapped[str | None] = mapped_column(String(1024))


class QueueAssignmentRecord(Base):
    __tablename__ = "run_queue_assignments"

    run_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    queue: Mapped[str] = mapped_column(String(255))
    assigned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ShardHealthRecord(Base):
    """The health of one shard's login, keyed by its auth volume (a move keeps the name)."""

    __tablename__ = "shard_health"

    volume: Mapped[str] = mapped_column(String(255), primary_key=True)
    host: Mapped[str | None] = mapped_column(String(255))
    shard: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(String(64))
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    auth_digest: Mapped[str | None] = mapped_column(String(64))
    run_id: Mapped[str | None] = mapped_column(String(128))
    phase: Mapped[str | None] = mapped_column(String(128))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ShardHealthEventRecord(Base):
    """Every quarantine and every lift, in order (what status and metrics show)."""

    __tablename__ = "shard_health_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    volume: Mapped[str] = mapped_column(String(255), index=True)
    host: Mapped[str | None] = mapped_column(String(255))
    shard: Mapped[int | None] = mapped_column(Integer)
    event: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(64))
    auth_digest: Mapped[str | None] = mapped_column(String(64))
    run_id: Mapped[str | None] = mapped_column(String(128))
    phase: Mapped[str | None] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LoginFingerprintRecord(Base):
    """One keyed fingerprint of a login one auth volume presented (moonmind_codex.core.fence)."""

    __tablename__ = "login_fingerprints"
    __table_args__ = (
        UniqueConstraint("fingerprint", "volume", name="uq_login_fingerprint_volume"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    key_id: Mapped[str] = mapped_column(String(16))
    volume: Mapped[str] = mapped_column(String(255), index=True)
    host: Mapped[str | None] = mapped_column(String(255))
    shard: Mapped[int | None] = mapped_column(Integer)
    auth_digest: Mapped[str | None] = mapped_column(String(64))
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


def _holder(row: LoginFingerprintRecord) -> fence.Holder:
    return fence.Holder(
        volume=row.volume,
        host=row.host,
        shard=row.shard,
        order=row.id,
        resolved_at=None if row.resolved_at is None else _aware(row.resolved_at),
        auth_digest=row.auth_digest,
        first_seen=_aware(row.first_seen),
    )


def _aware(moment: datetime) -> datetime:
    """SQLite hands timezone-aware columns back naive (in UTC): make them aware again."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _aware_or_none(moment: datetime | None) -> datetime | None:
    return None if moment is None else _aware(moment)


def _latest(*moments: datetime | None) -> datetime | None:
    return max((_aware(m) for m in moments if m is not None), default=None)


@dataclass(frozen=True)
class ShardHealth:
    """A shard's login health as recorded: ``healthy`` or ``quarantined`` (with why, since)."""

    volume: str
    host: str | None
    shard: int | None
    status: str
    reason: str | None
    since: datetime
    auth_digest: str | None
    run_id: str | None
    phase: str | None

    @property
    def quarantined(self) -> bool:
        return self.status == "quarantined"

    @property
    def since_text(self) -> str:
        return _aware(self.since).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def gate_value(self) -> str | None:
        """``AUTH_DIGEST REASON SINCE`` for the job's gate, or None when not quarantined."""
        if not self.quarantined or not self.auth_digest:
            return None
        return f"{self.auth_digest} {self.reason or 'rejected'} {self.since_text}"


@dataclass(frozen=True)
class ShardHealthEvent:
    volume: str
    event: str
    reason: str | None
    auth_digest: str | None
    run_id: str | None
    phase: str | None
    at: datetime


def _health(row: ShardHealthRecord) -> ShardHealth:
    return ShardHealth(
        volume=row.volume,
        host=row.host,
        shard=row.shard,
        status=row.status,
        reason=row.reason,
        since=_aware(row.since),
        auth_digest=row.auth_digest,
        run_id=row.run_id,
        phase=row.phase,
    )


@dataclass(frozen=True)
class PhaseAttempt:
    """A phase attempt as recorded (detached from the session)."""

    run_id: str
    phase: str
    attempt: int
    status: str
    task_id: str | None
    container_name: str | None
    exit_code: int | None
    error: str | None
    log_path: str | None

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATES


def _attempt(row: PhaseAttemptRecord) -> PhaseAttempt:
    return PhaseAttempt(
        run_id=row.run_id,
        phase=row.phase,
        attempt=row.attempt,
        status=row.status,
        task_id=row.task_id,
        container_name=row.container_name,
        exit_code=row.exit_code,
        error=row.error,
        log_path=row.log_path,
    )


def _prepare_sqlite_file(database: Path) -> None:
    """Create the database file, its migration lock file and directory, owned like their parent.

    Workers (uid 10001) and the operator's CLI (root) share one SQLite file in the workers'
    state directory: a file root created would be read-only for the workers. SQLite itself
    gives its -wal and -shm files the database file's owner when it runs as root.
    """
    missing: list[Path] = []
    parent = database.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    owner = parent.stat()
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o750)
        except FileExistsError:
            continue  # another process starting at the same moment made it
        if os.geteuid() == 0:
            os.chown(directory, owner.st_uid, owner.st_gid)
    for path in (database, _sqlite_migration_lock_path(database)):
        if not path.exists():
            path.touch(mode=0o640)
            if os.geteuid() == 0:
                os.chown(path, owner.st_uid, owner.st_gid)


def _sqlite_file(url: str) -> Path | None:
    """The file of an SQLite URL; None for another database or an in-memory one."""
    if not url.startswith("sqlite"):
        return None
    database = url.split("///", 1)[1] if "///" in url else ""
    return Path(database) if database and database != ":memory:" else None


def make_engine(url: str, *, prepare: bool = True) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and enforced foreign keys.

    ``prepare``: create a missing SQLite file, its directory and its migration lock file.
    """
    if url.startswith("sqlite"):
        database = _sqlite_file(url)
        if prepare and database is not None:
            _prepare_sqlite_file(database)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


# Any fixed number: every process migrating one PostgreSQL database queues on this lock.
_MIGRATION_LOCK_KEY = 0x6D6D635F636F6478


def _sqlite_migration_lock_path(database: Path) -> Path:
    # Not the database file itself: closing any descriptor of it would drop the POSIX locks
    # SQLite holds on it in this process.
    return database.with_name(database.name + ".migrate-lock")


@contextmanager
def _one_migration_at_a_time(engine: Engine) -> Iterator[None]:
    """Serialise migrations across processes (workers of one host start together).

    Two processes creating the schema at once would both see an empty database and the second
    would fail on a table the first just made.
    """
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield  # PostgreSQL takes its advisory lock inside the migration's own transaction
        return
    lock_path = _sqlite_migration_lock_path(Path(database))
    descriptor = os.open(lock_path, os.O_RDONLY | os.O_CREAT, 0o640)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` with the packaged migrations, one process at a time."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with _one_migration_at_a_time(engine), engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
            )
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


class RunStore:
    """Runs, phase attempts, queue assignments and shard health; each method is one transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

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
        database = _sqlite_file(url)
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
        head = _head_revision()
        if revision != head:
            engine.dispose()
            raise StoreUnavailable(
                f"the run store at {shown} is at schema revision {revision}, this moonmind-codex "
                f"reads {head}: run `moonmind-codex db upgrade`"
            )
        return cls(engine)

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

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
            return [_attempt(row) for row in session.scalars(query)]

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
                elif row.status not in FINAL_STATES:
                    row.status, row.task_id = "running", task_id
                    row.container_name, row.log_path = container_name, log_path
                    row.started_at = row.started_at or now
                session.flush()
                return _attempt(row)
        except IntegrityError:
            # A concurrent delivery inserted it first: read what it recorded.
            with self._transaction() as session:
                found = self._attempt_row(session, run_id, phase, attempt)
                if found is None:  # pragma: no cover - the insert that beat us was rolled back
                    raise
                return _attempt(found)

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
            if row.status not in FINAL_STATES:
                row.status, row.exit_code, row.error = status, exit_code, error
                row.finished_at = utcnow()
            session.flush()
            return _attempt(row)

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
            opened = [_attempt(row) for row in rows if row.status not in FINAL_STATES]
            now = utcnow()
            for row in rows:
                if row.status not in FINAL_STATES:
                    row.status, row.finished_at = "cancelled", now
                    row.error = "cancelled by an operator"
            run.status, run.finished_at = "cancelled", now
            return opened

    def run_cancelled(self, run_id: str) -> bool:
        with self._transaction() as session:
            run = session.get(RunRecord, run_id)
            return run is not None and run.status == "cancelled"

    def shard_activity(self, shard: Shard) -> ShardActivity:
        """What the store says about ``shard``'s queue and its keep-alives (the keep-alive
        scheduler's reading; :mod:`moonmind_codex.core.keepalive` decides)."""
        on_queue = RunRecord.queue == shard.queue
        attempts = select(PhaseAttemptRecord).join(
            RunRecord, PhaseAttemptRecord.run_id == RunRecord.id
        )
        with self._transaction() as session:
            created = session.scalar(select(func.max(RunRecord.created_at)).where(on_queue))
            started, finished = session.execute(
                attempts.with_only_columns(
                    func.max(PhaseAttemptRecord.started_at),
                    func.max(PhaseAttemptRecord.finished_at),
                ).where(on_queue)
            ).one()
            running_since = session.scalar(
                attempts.with_only_columns(func.max(PhaseAttemptRecord.started_at)).where(
                    on_queue, PhaseAttemptRecord.status.in_(RUNNING_ATTEMPT_STATES)
                )
            )
            keepalive = session.scalars(
                select(RunRecord)
                .where(
                    on_queue,
                    RunRecord.id.startswith(run_id_prefix(shard.number), autoescape=True),
                )
                .order_by(RunRecord.created_at.desc())
                .limit(1)
            ).one_or_none()
            last_keepalive = _aware(keepalive.created_at) if keepalive is not None else None
            keepalive_open = keepalive is not None and keepalive.status in OPEN_RUN_STATES
        health = self.shard_health(shard.volume)
        fence_verdict = self.login_fence(shard.volume)
        return ShardActivity(
            last_activity=_latest(created, started, finished),
            running_since=_aware_or_none(running_since),
            keepalive_open_since=last_keepalive if keepalive_open else None,
            last_keepalive_at=last_keepalive,
            quarantined=health is not None and health.quarantined,
            fenced_auth_digest=(
                fence_verdict.holder.auth_digest
                if fence_verdict is not None and fence_verdict.fenced
                else None
            ),
        )

    # Shard health (moonmind_codex.core.health decides; the gate blocks a quarantined login).

    def shard_health(self, volume: str) -> ShardHealth | None:
        """The recorded health of ``volume``'s login; None when nothing was ever recorded."""
        with self._transaction() as session:
            row = session.get(ShardHealthRecord, volume)
            return None if row is None else _health(row)

    def quarantine(
        self,
        volume: str,
        *,
        host: str | None,
        shard: int | None,
        reason: str,
        auth_digest: str,
        run_id: str | None = None,
        phase: str | None = None,
    ) -> ShardHealth:
        """The server rejected the login hashing to ``auth_digest``: quarantine the shard.

        Idempotent for one login (a redelivery classifying the same job again keeps the first
        reason and time); a quarantine of another login replaces it.
        """
        for attempt in range(2):
            try:
                with self._transaction() as session:
                    row = session.get(ShardHealthRecord, volume)
                    now = utcnow()
                    if row is None:
                        row = ShardHealthRecord(volume=volume, status="healthy", since=now)
                        session.add(row)
                    elif row.status == "quarantined" and row.auth_digest == auth_digest:
                        session.flush()
                        return _health(row)
                    row.host, row.shard = host, shard
                    row.status, row.reason, row.since = "quarantined", reason, now
                    row.auth_digest, row.run_id, row.phase = auth_digest, run_id, phase
                    row.updated_at = now
                    session.add(
                        ShardHealthEventRecord(
                            volume=volume, host=host, shard=shard, event="quarantined",
                            reason=reason, auth_digest=auth_digest, run_id=run_id,
                            phase=phase, at=now,
                        )
                    )  # fmt: skip
                    session.flush()
                    return _health(row)
            except IntegrityError:
                if attempt:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def lift_quarantine(
        self,
        volume: str,
        *,
        quarantined_digest: str,
        auth_digest: str | None,
        run_id: str | None = None,
        phase: str | None = None,
    ) -> bool:
        """A new login (``auth_digest``) replaced the rejected one: the shard is healthy again.

        Only the quarantine of ``quarantined_digest`` is lifted (a newer one stands); returns
        whether it was.
        """
        with self._transaction() as session:
            row = session.get(ShardHealthRecord, volume)
            if row is None or row.status != "quarantined":
                return False
            if row.auth_digest != quarantined_digest or auth_digest == quarantined_digest:
                return False
            now = utcnow()
            lifted = row.reason
            row.status, row.reason, row.since, row.updated_at = "healthy", None, now, now
            row.auth_digest, row.run_id, row.phase = auth_digest, run_id, phase
            session.add(
                ShardHealthEventRecord(
                    volume=volume, host=row.host, shard=row.shard, event="lifted",
                    reason=lifted, auth_digest=auth_digest, run_id=run_id, phase=phase, at=now,
                )
            )  # fmt: skip
            return True

    def shard_health_events(self, volume: str) -> list[ShardHealthEvent]:
        """Every quarantine and lift of ``volume``, oldest first."""
        query = (
            select(ShardHealthEventRecord)
            .where(ShardHealthEventRecord.volume == volume)
            .order_by(ShardHealthEventRecord.id)
        )
        with self._transaction() as session:
            return [
                ShardHealthEvent(
                    volume=row.volume, event=row.event, reason=row.reason,
                    auth_digest=row.auth_digest, run_id=row.run_id, phase=row.phase,
                    at=_aware(row.at),
                )
                for row in session.scalars(query)
            ]  # fmt: skip

    # Copied logins fenced (moonmind_codex.core.fence decides; the gate blocks a fenced login).

    def register_login(
        self,
        volume: str,
        *,
        host: str | None,
        shard: int | None,
        fingerprint: str,
        key_id: str,
        auth_digest: str | None,
    ) -> fence.FenceVerdict:
        """``volume`` presents the login with ``fingerprint``: record it, judge it."""
        for attempt in range(2):
            try:
                with self._transaction() as session:
                    row = self._fingerprint_row(session, fingerprint, volume)
                    now = utcnow()
                    if row is None:
                        row = LoginFingerprintRecord(
                            fingerprint=fingerprint, key_id=key_id, volume=volume,
                            first_seen=now,
                        )  # fmt: skip
                        session.add(row)
                    row.host, row.shard, row.auth_digest = host, shard, auth_digest
                    row.key_id, row.last_seen = key_id, now
                    session.flush()
                    return self._judge(session, row)
            except IntegrityError:
                if attempt:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def login_fence(self, volume: str) -> fence.FenceVerdict | None:
        """How ``volume``'s latest registered login stands; None when none was registered."""
        with self._transaction() as session:
            row = self._latest_fingerprint(session, volume)
            return None if row is None else self._judge(session, row)

    def resolve_login_fence(self, volume: str) -> fence.FenceVerdict | None:
        """An operator's choice: ``volume`` keeps its latest login; other holders are fenced."""
        with self._transaction() as session:
            row = self._latest_fingerprint(session, volume)
            if row is None:
                return None
            row.resolved_at = utcnow()
            session.flush()
            return self._judge(session, row)

    def login_fences(self) -> list[fence.FenceVerdict]:
        """Every volume's latest login, judged (for status)."""
        with self._transaction() as session:
            volumes = session.scalars(select(LoginFingerprintRecord.volume).distinct()).all()
            found = []
            for volume in sorted(volumes):
                row = self._latest_fingerprint(session, volume)
                if row is not None:
                    found.append(self._judge(session, row))
            return found

    def unavailable_shards(self) -> set[int]:
        """Shards that should get no new run: quarantined, or holding a fenced login copy."""
        with self._transaction() as session:
            query = select(ShardHealthRecord.shard).where(ShardHealthRecord.status == "quarantined")
            found = {n for n in session.scalars(query) if n is not None}
        fenced = (v.holder.shard for v in self.login_fences() if v.fenced)
        return found | {n for n in fenced if n is not None}

    # Fleet status (moonmind_codex.core.fleet_status shapes what these return).

    def shard_healths(self) -> list[ShardHealth]:
        """Every volume's recorded health, by volume."""
        query = select(ShardHealthRecord).order_by(ShardHealthRecord.volume)
        with self._transaction() as session:
            return [_health(row) for row in session.scalars(query)]

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
    def _fingerprint_row(
        session: Session, fingerprint: str, volume: str
    ) -> LoginFingerprintRecord | None:
        return session.scalars(
            select(LoginFingerprintRecord).where(
                LoginFingerprintRecord.fingerprint == fingerprint,
                LoginFingerprintRecord.volume == volume,
            )
        ).one_or_none()

    @staticmethod
    def _latest_fingerprint(session: Session, volume: str) -> LoginFingerprintRecord | None:
        return session.scalars(
            select(LoginFingerprintRecord)
            .where(LoginFingerprintRecord.volume == volume)
            .order_by(LoginFingerprintRecord.last_seen.desc(), LoginFingerprintRecord.id.desc())
            .limit(1)
        ).one_or_none()

    @staticmethod
    def _judge(session: Session, row: LoginFingerprintRecord) -> fence.FenceVerdict:
        """Judged among the holders of the same fingerprint made with the same key."""
        holders = session.scalars(
            select(LoginFingerprintRecord).where(
                LoginFingerprintRecord.fingerprint == row.fingerprint,
                LoginFingerprintRecord.key_id == row.key_id,
            )
        ).all()
        return fence.judge(row.volume, [_holder(h) for h in holders])

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


class StoreUnavailable(Exception):
    """The run store cannot be read; the message names where (no password) and why."""


def redacted_url(url: str) -> str:
    """``url`` with its password (in the URL or its query) shown as ``***``."""
    try:
        parsed = make_url(url)
    except SQLAlchemyError:
        return "(a URL that cannot be parsed)"
    query = {
        key: ("***" if "password" in key.lower() else value) for key, value in parsed.query.items()
    }
    return parsed.set(query=query).render_as_string(hide_password=True)


def unavailable(url: str, exc: Exception) -> StoreUnavailable:
    """The error for a store at ``url`` that failed with ``exc`` (no password in it)."""
    return StoreUnavailable(f"cannot read the run store at {redacted_url(url)}: {_why(exc, url)}")


def _why(exc: Exception, url: str) -> str:
    """The driver's own first line (not SQLAlchemy's SQL and links), with no password in it."""
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    why = lines[0] if lines else type(cause).__name__
    try:
        parsed = make_url(url)
    except SQLAlchemyError:
        return why
    secrets = [parsed.password, *(v for k, v in parsed.query.items() if "password" in k.lower())]
    for secret in secrets:
        if isinstance(secret, str) and secret:
            why = why.replace(secret, "***")
    return why


def _head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def _is_keepalive(column: Any) -> Any:
    return column.startswith(RUN_ID_PREFIX, autoescape=True)


def _run_view(row: RunRecord) -> RunView:
    return RunView(
        run_id=row.id,
        status=row.status,
        queue=row.queue,
        shard=row.shard,
        host=row.host,
        created_at=_aware(row.created_at),
        started_at=None if row.started_at is None else _aware(row.started_at),
        finished_at=None if row.finished_at is None else _aware(row.finished_at),
    )


def latest(attempts: Sequence[PhaseAttempt]) -> PhaseAttempt | None:
    return max(attempts, key=lambda a: a.attempt, default=None)


RUN_FINAL_STATES = frozenset({"succeeded", "failed", "blocked", "cancelled"})


def run_status(phase_states: Sequence[str], current: str) -> str:
    """A run's status from the latest state of each of its phases (pure)."""
    if current == "cancelled":
        return current
    if "blocked" in phase_states:
        return "blocked"
    if any(state in ("failed", "timed_out", "lost") for state in phase_states):
        return "failed"
    if phase_states and all(state == "succeeded" for state in phase_states):
        return "succeeded"
    if any(state in ("running", "busy") for state in phase_states) or any(
        state == "succeeded" for state in phase_states
    ):
        return "running"
    return "pending" if current == "pending" else current
