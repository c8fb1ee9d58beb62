"""The run store's records of shards: activity for the keep-alives, health (quarantine), login
fingerprints (the fence) and which shards take no new run."""

from __future__ import annotations

from sqlalchemy import (
    func,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from moonmind_codex.core import fence
from moonmind_codex.core.keepalive import ShardActivity, run_id_prefix
from moonmind_codex.core.shard import Shard
from moonmind_codex.core.states import OPEN_RUN_STATES, RUNNING_ATTEMPT_STATES
from moonmind_codex.store.engine import StoreBase
from moonmind_codex.store.models import (
    LoginFingerprintRecord,
    PhaseAttemptRecord,
    RunRecord,
    ShardHealth,
    ShardHealthEvent,
    ShardHealthEventRecord,
    ShardHealthRecord,
    aware,
    aware_or_none,
    health_of,
    holder_of,
    latest_moment,
    utcnow,
)


class ShardRecords(StoreBase):
    """Queries about shards; :class:`moonmind_codex.store.runstore.RunStore` has them all."""

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
            last_keepalive = aware(keepalive.created_at) if keepalive is not None else None
            keepalive_open = keepalive is not None and keepalive.status in OPEN_RUN_STATES
        health = self.shard_health(shard.volume)
        fence_verdict = self.login_fence(shard.volume)
        return ShardActivity(
            last_activity=latest_moment(created, started, finished),
            running_since=aware_or_none(running_since),
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
            return None if row is None else health_of(row)

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
                        return health_of(row)
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
                    return health_of(row)
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
                    at=aware(row.at),
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
        return fence.judge(row.volume, [holder_of(h) for h in holders])
