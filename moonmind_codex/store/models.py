"""The run store's tables (SQLAlchemy models) and the read-only views its queries return.

The schema is owned by the Alembic migrations in ``migrations/``; a model changes with a new
revision there (CONTRIBUTING.md says how).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import (
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from moonmind_codex.core import fence
from moonmind_codex.core.states import ATTEMPT_FINAL_STATES


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


def holder_of(row: LoginFingerprintRecord) -> fence.Holder:
    return fence.Holder(
        volume=row.volume,
        host=row.host,
        shard=row.shard,
        order=row.id,
        resolved_at=None if row.resolved_at is None else aware(row.resolved_at),
        auth_digest=row.auth_digest,
        first_seen=aware(row.first_seen),
    )


def aware(moment: datetime) -> datetime:
    """A moment without a zone is UTC: SQLite hands timezone-aware columns back naive, and a
    login file may write its times without one."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def aware_or_none(moment: datetime | None) -> datetime | None:
    return None if moment is None else aware(moment)


def latest_moment(*moments: datetime | None) -> datetime | None:
    return max((aware(m) for m in moments if m is not None), default=None)


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
        return aware(self.since).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

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


def health_of(row: ShardHealthRecord) -> ShardHealth:
    return ShardHealth(
        volume=row.volume,
        host=row.host,
        shard=row.shard,
        status=row.status,
        reason=row.reason,
        since=aware(row.since),
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
        return self.status in ATTEMPT_FINAL_STATES


def attempt_of(row: PhaseAttemptRecord) -> PhaseAttempt:
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
