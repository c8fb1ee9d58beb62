"""A shard worker's keep-alive thread: reads the store and the login, sends a keep-alive run.

Runs in the worker's main process (started when the worker is ready, stopped when it shuts
down); :mod:`moonmind_codex.core.keepalive` decides. A keep-alive is an ordinary one-phase run
(``keepalive-<shard>-<UTC time>``, phase ``keepalive``, ``MOONMIND_CODEX_KEEPALIVE_COMMAND``)
submitted with :func:`moonmind_codex.producer.submit.submit_run` and pinned to this shard's
queue, so it is signed, recorded, audited, pre-flighted and run under the volume's lock like any
phase, behind whatever the queue already holds. The login's ``last_refresh`` comes from the
pre-flight probe (metadata only, never a token), read only when the store says the shard is
idle and free, and again only after a phase ran or the horizon came.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from moonmind_codex.core.keepalive import (
    KEEPALIVE_PHASE,
    Decision,
    KeepalivePolicy,
    LoginState,
    decide,
    first_check_delay,
    keepalive_run_id,
    login_read_needed,
    run_id_prefix,
)
from moonmind_codex.core.shard import Shard
from moonmind_codex.settings import Settings
from moonmind_codex.store.models import aware, utcnow
from moonmind_codex.store.runstore import RunStore

log = logging.getLogger(__name__)


def policy_of(settings: Settings) -> KeepalivePolicy:
    return KeepalivePolicy(
        refresh_after=timedelta(days=settings.keepalive_after_days),
        idle_after=timedelta(minutes=settings.keepalive_idle_minutes),
        retry_after=timedelta(hours=settings.keepalive_retry_hours),
        stagger=timedelta(minutes=settings.keepalive_stagger_minutes),
        job_timeout=timedelta(seconds=settings.job_timeout_seconds),
    )


def login_from_report(report: dict[str, Any]) -> LoginState:
    """The login's mode and ``last_refresh`` from a probe report (no token is in it)."""
    inspection = report.get("inspection") or {}
    raw = inspection.get("last_refresh")
    refreshed = None
    if isinstance(raw, str):
        try:
            refreshed = aware(datetime.fromisoformat(raw.replace("Z", "+00:00")))
        except ValueError:
            refreshed = None
    mode = inspection.get("auth_mode")
    digest = report.get("auth_digest")
    return LoginState(
        auth_mode=mode if isinstance(mode, str) else None,
        last_refresh=refreshed,
        auth_digest=digest if isinstance(digest, str) else None,
    )


def read_login(settings: Settings, shard: Shard) -> LoginState | None:
    """The login as the pre-flight probe sees it (no lock taken); None when it cannot run."""
    import time

    from moonmind_codex.engine.client import ENGINE_ERRORS, DockerUnavailable, connect
    from moonmind_codex.engine.job_gate import PreflightBlocked
    from moonmind_codex.engine.preflight import probe

    try:
        client = connect(settings)
    except DockerUnavailable as exc:
        log.warning("keep-alive check of shard %s cannot read its login: %s", shard.number, exc)
        return None
    try:
        report = probe(
            settings, shard, client, time.monotonic() + settings.preflight_timeout_seconds
        )
    except PreflightBlocked as blocked:
        log.warning("keep-alive check of shard %s cannot read its login: %s", shard.number, blocked)
        return None
    finally:
        with contextlib.suppress(*ENGINE_ERRORS):
            client.close()
    return login_from_report(report)


@dataclass
class _LoginRead:
    login: LoginState
    activity_marker: datetime | None
    recheck_at: datetime | None


class KeepaliveScheduler:
    """One shard's keep-alive checks, every ``keepalive_check_seconds``, in a daemon thread."""

    def __init__(
        self,
        settings: Settings,
        app: Any,
        *,
        clock: Callable[[], datetime] = utcnow,
        login_reader: Callable[[Settings, Shard], LoginState | None] = read_login,
    ) -> None:
        self.settings = settings
        self.app = app
        self.shard = settings.served_shard
        self.policy = policy_of(settings)
        self._clock = clock
        self._read_login = login_reader
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._store: RunStore | None = None
        self._login: _LoginRead | None = None
        self._last_reason: str | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._loop, name=f"keepalive-{self.shard.number}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        interval = self.settings.keepalive_check_seconds
        delay = first_check_delay(self.shard.number, self.settings.shard_count, interval)
        if self._stop.wait(delay):
            return
        while not self._stop.is_set():
            try:
                self.check_once()
            except Exception:  # the next check tries again; the worker keeps serving
                log.exception("keep-alive check of shard %s failed", self.shard.number)
            if self._stop.wait(interval):
                return

    def _open_store(self) -> RunStore:
        if self._store is None:
            self._store = RunStore.open(self.settings.database_url)
        return self._store

    def check_once(self) -> Decision:
        """One check; sends a keep-alive when it is due. Returns the decision."""
        store = self._open_store()
        try:
            decision = self._check(store)
        finally:
            # No connection stays open between checks (the prefork pool forks this process).
            store.engine.dispose()
        if decision.reason != self._last_reason:
            log.log(
                logging.INFO if decision.due else logging.DEBUG,
                "keep-alive check of shard %s: %s",
                self.shard.number,
                decision.reason,
            )
            self._last_reason = decision.reason
        return decision

    def _check(self, store: RunStore) -> Decision:
        now = self._clock()
        activity = store.shard_activity(self.shard)
        args = (now, self.shard.number, self.settings.shard_count, activity)
        decision = decide(*args, None, self.policy)
        if not decision.needs_login:
            return decision
        known = self._login
        if known is not None and not login_read_needed(
            now, activity, known.activity_marker, known.recheck_at
        ):
            decision = decide(*args, known.login, self.policy)
            # A remembered login never sends a keep-alive by itself: it is read again first.
            if not decision.due:
                return decision
        login = self._read_login(self.settings, self.shard)
        if login is None:
            self._login = None
            return Decision(False, "the login could not be read; trying again at the next check")
        decision = decide(*args, login, self.policy)
        self._login = _LoginRead(login, activity.last_activity, decision.recheck_at)
        if decision.due:
            self._login = None
            self._send(store, now, decision)
        return decision

    def _send(self, store: RunStore, now: datetime, decision: Decision) -> str:
        from moonmind_codex.producer.submit import submit_run

        run_id = keepalive_run_id(self.shard.number, now)
        # Pinned before it is routed: the keep-alive is for this shard's login, whatever its key.
        store.assign(run_id, self.shard.queue)
        submit_run(
            self.app,
            {
                "run_id": run_id,
                "affinity_key": run_id_prefix(self.shard.number) + "login",
                "phases": [
                    {
                        "name": KEEPALIVE_PHASE,
                        "command": list(self.settings.keepalive_command),
                        "timeout_s": self.settings.keepalive_timeout_seconds,
                    }
                ],
            },
            self.settings,
            store,
        )
        log.info(
            "keep-alive %s sent to %s (shard %s, volume %s): %s",
            run_id,
            self.shard.queue,
            self.shard.number,
            self.shard.volume,
            decision.reason,
        )
        return run_id


def for_worker(settings: Settings, app: Any) -> KeepaliveScheduler | None:
    """The worker's scheduler, or None (with the reason logged) when keep-alives are off."""
    if not settings.keepalive_enabled:
        log.info("keep-alives are off (MOONMIND_CODEX_KEEPALIVE_ENABLED=false)")
        return None
    if settings.queue_mode != "sharded":
        log.warning(
            "keep-alives need MOONMIND_CODEX_QUEUE_MODE=sharded: on the one shared queue a "
            "keep-alive could reach another shard's login; none is sent"
        )
        return None
    return KeepaliveScheduler(settings, app)
