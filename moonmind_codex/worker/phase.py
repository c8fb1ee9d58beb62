"""One Codex phase attempt on a worker: record, audit, job container (pre-flight first), record.

Exactly once per attempt: the attempt is recorded in the run store before anything runs, and
its end is recorded before the job container is removed. A redelivery (a worker killed, an ack
lost in a broker restart) therefore finds the container of the first delivery (and collects it)
or the recorded end (and returns it, starting nothing); it never starts the job again.

The pre-flight login check is the job container's first step, under the volume's lock: one
container start per phase, and the login that was checked is the login the command uses. A
blocked check starts no command; the run is marked ``blocked`` with the fix.

Every delivery that runs writes one audit start and one audit end record; a misrouted phase is
refused untouched (it belongs to another shard), and a replayed one writes none (it ran once,
and was audited then).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from moonmind_codex.core import fence
from moonmind_codex.core.messages import Fix
from moonmind_codex.core.phase_result import PhaseResult
from moonmind_codex.core.preflight_eval import Finding, PreflightResult, blocked_result
from moonmind_codex.core.shard import Shard
from moonmind_codex.core.states import REPLAYED_OUTCOME
from moonmind_codex.engine.client import DockerUnavailable, connect
from moonmind_codex.engine.job_gate import CliVerdictCache, PreflightBlocked
from moonmind_codex.engine.jobs import (
    JobResult,
    JobSpec,
    job_container_name,
    launch_job,
    log_path_for,
)
from moonmind_codex.settings import Settings, read_fence_key
from moonmind_codex.store import audit
from moonmind_codex.store.models import PhaseAttempt, ShardHealth
from moonmind_codex.store.runstore import RunStore
from moonmind_codex.worker.login_records import record_health, record_login
from moonmind_codex.worker.request import (
    PhaseBookkeepingError,
    PhaseRequest,
)

log = logging.getLogger(__name__)


@dataclass
class WorkerMemory:
    """What one worker process remembers from phase to phase; its Celery app owns one."""

    # A phase skips `codex login status` when the login is unchanged since a good verdict.
    cli_verdicts: CliVerdictCache = field(default_factory=CliVerdictCache)
    # Why fencing is off (no key, or a key file that cannot be used), each said once.
    fencing_off_said: set[str] = field(default_factory=set)

    def fence_key(self, settings: Settings) -> tuple[bytes, str] | None:
        """The fleet's fingerprint key and its id, read now; None (said once) without one."""
        found = read_fence_key(settings.fingerprint_key_file)
        if isinstance(found, tuple):
            return found
        if found not in self.fencing_off_said:
            self.fencing_off_said.add(found)
            log.warning("%s", found)
        return None


def run_phase(
    settings: Settings,
    client: Any,
    store: RunStore,
    request: PhaseRequest,
    *,
    worker: str,
    task_id: str | None,
    delivered_on: str | None,
    memory: WorkerMemory | None = None,
) -> PhaseResult:
    """Run one delivery of a phase attempt on this worker's shard, exactly once (see above).

    ``memory`` is the worker process's own (its Celery app passes it); without one, this call
    remembers nothing for the next.
    """
    shard = settings.served_shard
    if delivered_on is not None and delivered_on != shard.queue:
        return request.ended(
            shard,
            worker,
            "misrouted",
            message=(
                f"phase {request.phase} of run {request.run_id} arrived on queue {delivered_on}, "
                f"but this worker serves {shard.queue}; check the producer's shard count and "
                "queue mode"
            ),
        )
    recorded = _begin(settings, store, request, shard, task_id)
    if recorded.final:
        log.info(
            "phase %s of run %s (attempt %s) already ended %s: returning the recorded result, "
            "starting nothing",
            request.phase,
            request.run_id,
            request.attempt,
            recorded.status,
        )
        return request.ended(
            shard,
            worker,
            REPLAYED_OUTCOME.get(recorded.status, "failed"),
            exit_code=recorded.exit_code,
            container_name=recorded.container_name,
            log_path=recorded.log_path,
            message=recorded.error,
            replayed=True,
        )
    start = audit.started(
        run_id=request.run_id, phase=request.phase, shard=shard, worker=worker, task_id=task_id
    )
    _bookkeeping("write the audit record", audit.emit, start, settings.audit_log)
    began = time.monotonic()
    audited: list[PhaseResult] = []

    def audit_end(result: PhaseResult) -> None:
        """The one "finished" record; a job's is written before its end is recorded."""
        if audited:
            return
        audited.append(result)
        _bookkeeping(
            "write the audit record",
            audit.emit,
            audit.finished(start, result, time.monotonic() - began),
            settings.audit_log,
        )

    # Replaced on every path below; this one stands for a crash in between.
    result = request.ended(shard, worker, "failed")
    try:
        attempt = _Attempt(
            settings, store, request, shard, worker, audit_end, memory or WorkerMemory()
        )
        result = attempt.run(client)
        return result
    finally:
        audit_end(result)


def _bookkeeping(what: str, write: Any, *args: Any, **kwargs: Any) -> Any:
    """Run one write of the phase's records; a failure says what could not be written."""
    try:
        return write(*args, **kwargs)
    except PhaseBookkeepingError:
        raise
    except Exception as exc:  # disk full, database gone: the phase must not read as a success
        raise PhaseBookkeepingError(
            f"could not {what} ({type(exc).__name__}: {exc}); the phase is reported as failed "
            "so that it is never taken for a success: free the disk or fix the database, then "
            "retry the run"
        ) from exc


def _begin(
    settings: Settings, store: RunStore, request: PhaseRequest, shard: Shard, task_id: str | None
) -> PhaseAttempt:
    def write() -> PhaseAttempt:
        store.ensure_run(
            request.run_id,
            repository=request.repository,
            affinity_key=request.affinity_key or request.repository or request.run_id,
            status="running",
        )
        store.run_started_on(
            request.run_id,
            queue=shard.queue,
            shard=shard.number,
            volume=shard.volume,
            host=shard.host,
        )
        return store.begin_attempt(
            request.run_id,
            request.phase,
            request.attempt,
            task_id=task_id,
            container_name=job_container_name(request.run_id, request.phase, request.attempt),
            log_path=str(log_path_for(settings, request.run_id, request.phase)),
            position=request.position,
        )

    return _bookkeeping("record the phase's start in the run store", write)  # type: ignore[no-any-return]


def _blocked(
    store: RunStore, request: PhaseRequest, shard: Shard, worker: str, check: PreflightResult
) -> PhaseResult:
    log.error("%s", check.message())
    _bookkeeping(
        "record the blocked phase in the run store",
        _record_blocked,
        store,
        request,
        check.status,
        check.message(),
    )
    return request.ended(
        shard, worker, "blocked", preflight_status=check.status, message=check.message()
    )


@dataclass
class _Attempt:
    """One attempt's job on this shard, from the engine connection to the recorded end."""

    settings: Settings
    store: RunStore
    request: PhaseRequest
    shard: Shard
    worker: str
    audit_end: Callable[[PhaseResult], None]
    memory: WorkerMemory
    began: float = field(default_factory=time.monotonic)
    # Why a failed attempt failed, when the job's output says (a login the server rejected).
    notes: list[str] = field(default_factory=list)
    before: ShardHealth | None = None
    key: tuple[bytes, str] | None = None

    def run(self, client: Any) -> PhaseResult:
        if client is None:  # the worker could not reach the engine when it asked
            try:
                client = connect(self.settings)
            except DockerUnavailable as exc:
                # Its first sentence names the engine address; the remedy is for the shard.
                finding = Finding(
                    "docker engine", "blocked", str(exc).split(";")[0], Fix.START_DOCKER
                )
                return self._blocked(finding)
        spec = self._spec()
        self._make_log_dir()
        try:
            job = launch_job(
                self.settings,
                spec,
                client,
                on_finished=self._record_end,
                cancelled=lambda: _cancelled(self.store, self.request.run_id),
            )
        except PreflightBlocked as blocked:  # no container could be made or started
            return self._blocked(blocked.finding)
        if job.log_error is not None:
            raise PhaseBookkeepingError(_log_failure(self.settings, job))
        if job.preflight is not None and job.preflight.status != "ok":
            level = logging.ERROR if job.outcome == "blocked" else logging.WARNING
            log.log(level, "%s", job.preflight.message())
        result = _job_result(self.request, self.shard, self.worker, job)
        return dataclasses.replace(result, message=self.notes[0]) if self.notes else result

    def _blocked(self, finding: Finding) -> PhaseResult:
        check = blocked_result(self.shard, finding, time.monotonic() - self.began)
        return _blocked(self.store, self.request, self.shard, self.worker, check)

    def _spec(self) -> JobSpec:
        """The job, with what the store holds against the login for its gate to judge."""
        volume = self.shard.volume
        # A login the server rejected: the job's gate blocks while auth.json is still that login.
        self.before = _bookkeeping(
            "read the shard's health from the run store", self.store.shard_health, volume
        )
        self.key = self.memory.fence_key(self.settings)
        fenced = None
        if self.key is not None:
            state = _bookkeeping(
                "read the shard's login fence from the run store", self.store.login_fence, volume
            )
            fenced = fence.gate_value(state) if state is not None else None
        return JobSpec(
            run_id=self.request.run_id,
            phase=self.request.phase,
            command=self.request.command,
            shard=self.shard,
            timeout_s=self.request.timeout_s or self.settings.job_timeout_seconds,
            preflight=True,
            known_verdict=self.memory.cli_verdicts.known(volume),
            attempt=self.request.attempt,
            quarantined=self.before.gate_value() if self.before is not None else None,
            fence=self.key is not None,
            fenced=fenced,
        )

    def _make_log_dir(self) -> None:
        log_dir = log_path_for(self.settings, self.request.run_id, self.request.phase).parent
        try:
            log_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PhaseBookkeepingError(
                f"could not create the phase log directory {log_dir} ({exc.strerror}); no job "
                "was started: free the disk or fix the directory's permissions, then retry the "
                "run"
            ) from exc

    def _record_end(self, job: JobResult) -> None:
        """Called by the job runner before the container is removed (see the module's note)."""
        if job.preflight_report is not None:
            self.memory.cli_verdicts.learn(self.shard.volume, job.preflight_report)
        # Audit first: should it fail, the store has no final state yet, the container stays,
        # and the phase fails instead of leaving a success the run cannot go on from.
        self.audit_end(_job_result(self.request, self.shard, self.worker, job))
        # Before the end is recorded: a redelivery that collects the container judges it again.
        health_note = self._judge_login(job)
        if job.outcome == "blocked" and job.preflight is not None and job.log_error is None:
            _bookkeeping(
                "record the blocked phase in the run store",
                _record_blocked,
                self.store,
                self.request,
                job.preflight.status,
                job.preflight.message(),
            )
            return
        failed_log = job.log_error is not None
        _bookkeeping(
            "record the job's end in the run store",
            self.store.finish_attempt,
            self.request.run_id,
            self.request.phase,
            self.request.attempt,
            status="failed" if failed_log else job.outcome,
            exit_code=job.exit_code,
            error=_log_failure(self.settings, job) if failed_log else health_note,
        )
        _bookkeeping("record the run's status", self.store.settle_run, self.request.run_id)

    def _judge_login(self, job: JobResult) -> str | None:
        """Quarantine or lift, and fence: what this job's login tells about the shard. Returns
        the health note (a login the server rejected), the attempt's error."""
        health_note: str | None = _bookkeeping(
            "record the shard's health in the run store",
            record_health,
            self.store,
            self.request,
            self.shard,
            self.before,
            job,
        )
        if health_note:
            self.notes.append(health_note)
        if self.key is not None:
            copied = _bookkeeping(
                "record the login's fingerprint in the run store",
                record_login,
                self.store,
                self.key,
                self.shard,
                job,
            )
            if copied:
                self.notes.append(copied)
        return health_note


def _log_failure(settings: Settings, job: JobResult) -> str:
    return (
        f"{job.log_error}; the job ran and ended {job.outcome.replace('_', ' ')} (exit code "
        f"{job.exit_code}), but without its log the phase is reported as failed: free the disk "
        f"under {settings.artifacts_dir}, then retry the run"
    )


def _job_result(request: PhaseRequest, shard: Shard, worker: str, job: JobResult) -> PhaseResult:
    """How the phase ended, from its job (a blocked pre-flight included)."""
    if job.log_error is not None:
        return request.ended(
            shard, worker, "failed", exit_code=job.exit_code, message=job.log_error
        )
    verdict = job.preflight
    if job.outcome == "blocked" and verdict is not None:
        return request.ended(
            shard, worker, "blocked", preflight_status=verdict.status, message=verdict.message()
        )
    return request.ended(
        shard,
        worker,
        job.outcome,
        preflight_status=verdict.status if verdict else None,
        container_id=job.container_id,
        container_name=job.container_name,
        exit_code=job.exit_code,
        log_path=str(job.log_path),
        duration_s=job.duration_s,
        reused_existing=job.reused_existing,
    )


def _cancelled(store: RunStore, run_id: str) -> bool:
    """Whether an operator cancelled the run; a store that cannot answer does not stop a job."""
    try:
        return store.run_cancelled(run_id)
    except Exception as exc:
        log.warning("cannot read the run store to check for a cancellation: %s", exc)
        return False


def _record_blocked(store: RunStore, request: PhaseRequest, status: str, message: str) -> None:
    store.finish_attempt(
        request.run_id, request.phase, request.attempt, status="blocked", error=message
    )
    store.update_run(request.run_id, preflight_status=status, preflight_message=message)
    store.settle_run(request.run_id)
