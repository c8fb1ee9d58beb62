"""Launch one job container per Codex phase, with the shard's auth volume mounted read-write.

The container name is derived from the run and phase, so a redelivered phase (``acks_late``
after a worker died) finds the container of the first delivery and awaits or reaps it instead of
starting a second job on the same login. The one-job-per-volume rule is enforced by a lock inside
the volume, taken by the image's entry point (exit 75 when held).

A job with ``preflight`` checks its login first, inside the same container and under that lock
(``moonmind_codex.gate.check``): a blocked verdict ends the container before the command starts, and
the verdict's line is kept out of the phase log. Failing to create or start such a container
(engine gone, image or volume missing) is a blocked pre-flight too: :class:`PreflightBlocked`.

Each run has a workspace volume of its own (``moonmind_codex.core.workspace``), made ready before
the run's first job container and mounted at ``/work`` in every job of that run only.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions

from moonmind_codex.core.exitcodes import ExitCode
from moonmind_codex.core.shard import Shard
from moonmind_codex.core.states import JobOutcome
from moonmind_codex.core.workspace import run_volume_name
from moonmind_codex.engine.client import ENGINE_ERRORS
from moonmind_codex.engine.containers import LABEL, NAME_PREFIX, JobImageContainer, create_kwargs
from moonmind_codex.engine.job_gate import (
    PreflightBlocked,
    container_start_step,
    engine_step,
    gate_environment,
    read_verdict,
    require_volume,
    verdict_line,
)
from moonmind_codex.engine.preflight import PreflightResult
from moonmind_codex.engine.run_volumes import ensure_run_volume
from moonmind_codex.gate.check import VERDICT_PREFIX
from moonmind_codex.settings import Settings

REDELIVERY_NOTE = "[moonmind-codex] container "

__all__ = ["JobResult", "JobSpec", "PreflightBlocked", "launch_job"]

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True)
class JobSpec:
    run_id: str
    phase: str
    command: Sequence[str]
    shard: Shard
    timeout_s: float
    # Check the login inside the job container before the command (every Codex phase does).
    preflight: bool = False
    # ``KEY SUMMARY`` of the volume's last good CLI verdict (see CliVerdictCache).
    known_verdict: str | None = None
    # Which attempt of the phase (``runs retry`` makes the next); part of the container name.
    attempt: int = 1
    # ``AUTH_DIGEST REASON SINCE`` of a login the server rejected (the gate blocks on it).
    quarantined: str | None = None
    # Report the login's one-way digest for the fence; ``fenced``: the copy's block (JSON).
    fence: bool = False
    fenced: str | None = None

    def __post_init__(self) -> None:
        for name in ("run_id", "phase"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _ID.fullmatch(value):
                raise ValueError(
                    f"{name} {value!r} is not valid: use 1-128 letters, digits, '_', '.' or '-', "
                    "starting with a letter or digit"
                )
        if not self.command or not all(isinstance(a, str) for a in self.command):
            raise ValueError("command must be a non-empty list of strings")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")


@dataclass(frozen=True)
class JobResult:
    container_id: str
    container_name: str
    exit_code: int | None
    outcome: JobOutcome
    log_path: Path
    duration_s: float
    reused_existing: bool
    # The judged in-container pre-flight, and its report (no secrets), when the job had one.
    preflight: PreflightResult | None = None
    preflight_report: dict[str, Any] | None = None
    # Set when the job ended but its log could not be written (a full disk): never a success.
    log_error: str | None = None


def _slug(value: str, limit: int) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", value.lower()).strip("-")[:limit] or "x"


def job_container_name(run_id: str, phase: str, attempt: int = 1) -> str:
    """Deterministic container name of a run's phase attempt (readable, collision-proof).

    Redeliveries of one attempt share it (so they find the first delivery's container); a
    retry is a new attempt with a name of its own, so it never collects an earlier attempt's
    container instead of running.
    """
    key = f"{run_id}\0{phase}" if attempt == 1 else f"{run_id}\0{phase}\0{attempt}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    suffix = "" if attempt == 1 else f"-a{attempt}"
    return f"{NAME_PREFIX}job-{_slug(run_id, 40)}-{_slug(phase, 24)}{suffix}-{digest}"


def log_path_for(settings: Settings, run_id: str, phase: str) -> Path:
    return settings.artifacts_dir / "spec_workflows" / run_id / f"{phase}.log"


def job_container(settings: Settings, spec: JobSpec) -> JobImageContainer:
    """The phase's container: the run's own workspace volume, the job network; no socket."""
    return JobImageContainer(
        role="job",
        shard=spec.shard,
        command=spec.command,
        name=job_container_name(spec.run_id, spec.phase, spec.attempt),
        network=settings.job_network,
        workspace_volume=run_volume_name(settings.workspace_volume_prefix, spec.run_id),
        # Read by the image's entry point (the run's working directory) and by the command.
        environment={
            "MOONMIND_CODEX_RUN_ID": spec.run_id,
            "MOONMIND_CODEX_PHASE": spec.phase,
            **(
                gate_environment(
                    settings,
                    spec.known_verdict,
                    spec.quarantined,
                    fence=spec.fence,
                    fenced=spec.fenced,
                )
                if spec.preflight
                else {}
            ),
        },
        extra_labels={"run_id": spec.run_id, "phase": spec.phase, "attempt": spec.attempt},
    )


class _VerdictFilter:
    """Passes a live output stream on without the pre-flight's verdict line."""

    def __init__(self, active: bool) -> None:
        self._pending = b"" if active else None

    def feed(self, chunk: bytes) -> bytes:
        if self._pending is None:
            return chunk
        self._pending += chunk
        out = b""
        while self._pending is not None and b"\n" in self._pending:
            line, self._pending = self._pending.split(b"\n", 1)
            if line.startswith(VERDICT_PREFIX.encode()):
                rest, self._pending = self._pending, None
                return out + rest
            out += line + b"\n"
        return out


def _stream_logs(container: Any, path: Path, preflight: bool) -> threading.Thread:
    """Follow the container's output into ``path`` while it runs (a live view).

    The follow stream can end before the engine has handed over a last line that has no
    newline, so :func:`_write_complete_log` replaces this file once the container has ended.
    """
    verdict = _VerdictFilter(preflight)

    def pump() -> None:
        with path.open("ab") as sink:
            try:
                for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
                    sink.write(verdict.feed(chunk))
                    sink.flush()
            except (docker.errors.APIError, requests.exceptions.RequestException):
                pass  # the container went away; whatever was read is kept
            except OSError:
                pass  # a full disk: the complete log below reports it

    thread = threading.Thread(target=pump, name=f"logs-{container.name}", daemon=True)
    thread.start()
    return thread


def _write_complete_log(container: Any, path: Path, header: str, verdict: bytes | None) -> None:
    """``path`` := ``header`` + the container's whole output (stdout and stderr, in order).

    The pre-flight's ``verdict`` line, when there is one, is the worker's, not the job's output.
    """
    output = container.logs(stdout=True, stderr=True, stream=False, follow=False)
    if verdict is not None:
        output = output.replace(verdict + b"\n", b"", 1)
    if not header:
        # A redelivery collecting the same container may have noted so first: keep its note.
        with contextlib.suppress(OSError), path.open("rb") as current:
            first = current.readline().decode("utf-8", "replace")
            if first.startswith(REDELIVERY_NOTE):
                header = first
    # A file of its own: a redelivery may be collecting the same container at the same time.
    with tempfile.NamedTemporaryFile(
        "wb", dir=path.parent, prefix=f".{path.name}.", delete=False
    ) as sink:
        try:
            sink.write(header.encode("utf-8"))
            sink.write(output)
            sink.flush()
        except OSError:
            # A full disk: leave no partial copy behind to keep it full.
            Path(sink.name).unlink(missing_ok=True)
            raise
    Path(sink.name).replace(path)


def _find_or_create(
    settings: Settings, spec: JobSpec, client: docker.DockerClient
) -> tuple[Any, bool]:
    """The phase's container, and whether an earlier delivery had already made it."""
    name = job_container_name(spec.run_id, spec.phase, spec.attempt)
    with _engine_step_of(spec, "while looking for the job container"):
        try:
            # A redelivered phase: await or reap the first delivery's container.
            return client.containers.get(name), True
        except docker.errors.NotFound:
            pass
    if spec.attempt > 1:
        with _engine_step_of(spec, "while removing earlier attempts"):
            _reap_earlier_attempts(client, spec, name)
    if spec.preflight:
        require_volume(client, spec.shard)
    # Before the container: mounting a missing volume would make an unlabelled, root-owned one.
    with _start_step_of(settings, spec, "while preparing the run's workspace volume"):
        ensure_run_volume(client, settings, spec.shard, spec.run_id)
    step = "while creating the job container"
    with _start_step_of(settings, spec, step):
        try:
            return client.containers.create(
                **create_kwargs(settings, job_container(settings, spec))
            ), False
        except docker.errors.APIError as exc:
            if exc.status_code != 409:
                raise
            return client.containers.get(name), True  # lost a race with a concurrent delivery


def _engine_step_of(spec: JobSpec, during: str) -> AbstractContextManager[None]:
    """A lost engine blocks a job with pre-flight; a job without raises the engine's errors."""
    return engine_step(during) if spec.preflight else nullcontext()


def _start_step_of(settings: Settings, spec: JobSpec, during: str) -> AbstractContextManager[None]:
    """Creating or starting a job with pre-flight: failures block it with the fix."""
    return container_start_step(settings, spec.shard, during) if spec.preflight else nullcontext()


def _reap_earlier_attempts(client: docker.DockerClient, spec: JobSpec, name: str) -> None:
    """Remove ended containers of this phase's earlier attempts (their ends are recorded).

    One still running is left alone: it holds the volume's lock, so this attempt's job gets
    ``busy`` and waits for it instead of sharing the login.
    """
    found = client.containers.list(
        all=True,
        filters={"label": [f"{LABEL}run-id={spec.run_id}", f"{LABEL}phase={spec.phase}"]},
    )
    for container in found:
        if container.name != name and container.status in ("created", "exited", "dead"):
            _remove(container)


# How often a running job checks whether its run was cancelled.
CANCEL_POLL_SECONDS = 2.0
# How long to wait before asking a lost engine about a running job again.
ENGINE_RETRY_SECONDS = 1.0


def _kill(container: Any) -> None:
    with contextlib.suppress(docker.errors.APIError):  # it may have just ended
        container.kill()
    # Only to let the log stream end; removal kills it for good anyway.
    with contextlib.suppress(docker.errors.APIError, requests.exceptions.RequestException):
        container.wait(timeout=30)


def _wait(
    container: Any, deadline: float, cancelled: Callable[[], bool] | None
) -> tuple[int | None, JobOutcome | None]:
    """The exit code, or (None, why) when the job was killed at its deadline or cancelled."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            _kill(container)
            return None, "timed_out"
        slice_s = remaining if cancelled is None else min(remaining, CANCEL_POLL_SECONDS)
        asked = time.monotonic()
        try:
            code: int | None = container.wait(timeout=max(0.001, slice_s)).get("StatusCode")
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            # The SDK reports the end of a slice as either; an answer well before the slice's
            # end means the engine is gone (or restarting): ask again in a while, not at once.
            if time.monotonic() - asked < slice_s / 2:
                time.sleep(min(ENGINE_RETRY_SECONDS, max(0.0, deadline - time.monotonic())))
            if cancelled is not None and cancelled():
                _kill(container)
                return None, "cancelled"
            continue
        return code, None


def job_outcome(exit_code: int | None) -> JobOutcome:
    """``None`` is the timeout's kill; the entry point's TEMPFAIL means the lock was held."""
    if exit_code is None:
        return "timed_out"
    if exit_code == ExitCode.TEMPFAIL:
        return "busy"
    return "succeeded" if exit_code == 0 else "failed"


def _run_to_end(
    settings: Settings,
    container: Any,
    reused: bool,
    spec: JobSpec,
    log_path: Path,
    started: float,
    cancelled: Callable[[], bool] | None,
) -> JobResult:
    container.reload()
    header = ""
    if reused:
        # The earlier delivery's worker (gone) may have copied part of the output already;
        # the complete log below replaces it.
        header = (
            f"{REDELIVERY_NOTE}{container.name} of an earlier delivery of this "
            f"phase was found ({container.status}): collecting it instead of starting "
            "another; its complete output follows\n"
        )
        with contextlib.suppress(OSError):  # a full disk must not cost the running job
            log_path.write_text(header, encoding="utf-8")
    if container.status == "created":
        step = "while starting the job container"
        with _start_step_of(settings, spec, step):
            container.start()
    pump = _stream_logs(container, log_path, spec.preflight)
    exit_code, stopped = _wait(container, started + spec.timeout_s, cancelled)
    pump.join(timeout=10)
    verdict = None
    if spec.preflight:
        verdict = verdict_line(container.logs(stdout=False, stderr=True, stream=False))
    log_error = None
    try:
        _write_complete_log(container, log_path, header, verdict)
    except OSError as exc:
        log_error = f"could not write the phase log {log_path} ({exc.strerror or exc})"
    checked: tuple[PreflightResult, dict[str, Any] | None] | None = None
    outcome = stopped or job_outcome(exit_code)
    # Busy: the lock was held, so the entry point ended before its pre-flight.
    if spec.preflight and outcome != "busy" and (verdict is not None or stopped is None):
        checked = read_verdict(settings, spec.shard, verdict, time.monotonic() - started, exit_code)
        if stopped is None and (verdict is None or checked[0].blocked):
            outcome = "blocked"  # the entry point started no command
            with contextlib.suppress(OSError), log_path.open("a", encoding="utf-8") as sink:
                sink.write(f"[moonmind-codex] {checked[0].message()}\n")
    if stopped is not None:
        why = (
            f"killed after the {spec.timeout_s:g} s timeout"
            if stopped == "timed_out"
            else "stopped: the run was cancelled"
        )
        with contextlib.suppress(OSError), log_path.open("a", encoding="utf-8") as sink:
            sink.write(f"\n[moonmind-codex] {why}\n")
    return JobResult(
        container_id=container.id,
        container_name=job_container_name(spec.run_id, spec.phase, spec.attempt),
        exit_code=exit_code,
        outcome=outcome,
        log_path=log_path,
        duration_s=round(time.monotonic() - started, 3),
        reused_existing=reused,
        preflight=checked[0] if checked else None,
        preflight_report=checked[1] if checked else None,
        log_error=log_error,
    )


def launch_job(
    settings: Settings,
    spec: JobSpec,
    client: docker.DockerClient,
    on_finished: Callable[[JobResult], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> JobResult:
    """Run ``spec`` in a job container and wait for it; the container is then removed.

    ``on_finished`` (recording the result) runs after the job ended and before the container
    is removed: if it raises, the container stays, so the result can still be collected.
    ``cancelled`` is asked every few seconds while the job runs; True stops the job.
    With ``spec.preflight``, raises :class:`PreflightBlocked` when no container could be made
    or started for the job (engine gone, image or volume missing): nothing ran.
    """
    log_path = log_path_for(settings, spec.run_id, spec.phase)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    container, reused = _find_or_create(settings, spec, client)
    try:
        result = _run_to_end(settings, container, reused, spec, log_path, started, cancelled)
    except BaseException:
        # The engine may be what failed: the original error is the one to report.
        with contextlib.suppress(*ENGINE_ERRORS):
            _remove(container)
        raise
    if on_finished is not None:
        on_finished(result)
    _remove(container)
    return result


def _remove(container: Any) -> None:
    """Remove the container; when a concurrent launcher is already at it, see it gone."""
    try:
        container.remove(force=True)
    except docker.errors.APIError as exc:
        if exc.status_code == 404:
            return
        if exc.status_code != 409:  # 409: removal already in progress elsewhere
            raise
        with contextlib.suppress(docker.errors.APIError, requests.exceptions.RequestException):
            container.wait(condition="removed", timeout=30)
