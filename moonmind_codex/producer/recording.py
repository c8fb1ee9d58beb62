"""Record the ordinary (non-Codex) phases of runs, and a run's failure, in the run store.

Codex phases record themselves (:mod:`moonmind_codex.worker.phase`). An ordinary phase runs on a
host application's default-queue worker: :func:`install_run_recording` connects Celery's task
signals there, so its start and end are recorded too, and registers the chain's errback
(``moonmind_codex.run_failed``), which Celery calls in the worker where a phase failed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from celery import Celery
from celery.signals import task_failure, task_prerun, task_success

from moonmind_codex.producer.submit import (
    ATTEMPT_HEADER,
    CODEX_PHASE_TASK,
    PHASE_HEADER,
    RUN_FAILED_TASK,
    RUN_HEADER,
)
from moonmind_codex.store.runstore import RunStore

log = logging.getLogger(__name__)


def _header(request: Any, name: str) -> Any:
    """A custom message header: an attribute of the request, or in its ``headers``."""
    value = getattr(request, name, None)
    if value is None:
        value = (getattr(request, "headers", None) or {}).get(name)
    return value


def run_phase_of(request: Any) -> tuple[str, str, int] | None:
    """(run id, phase, attempt) of a task sent as a phase of a run, else None."""
    run_id, phase = _header(request, RUN_HEADER), _header(request, PHASE_HEADER)
    attempt = _header(request, ATTEMPT_HEADER)
    if not isinstance(run_id, str) or not isinstance(phase, str):
        return None
    return run_id, phase, attempt if isinstance(attempt, int) and attempt > 0 else 1


def _record_failure(store: RunStore, request: Any, exc: BaseException) -> None:
    found = run_phase_of(request)
    if found is None:
        return
    run_id, phase, attempt = found
    # KeyError: never planned (a phase sent by hand), nothing to close.
    with contextlib.suppress(KeyError):
        store.finish_attempt(
            run_id, phase, attempt, status="failed", error=f"{type(exc).__name__}: {exc}"
        )
        store.settle_run(run_id)


def register_run_failed(app: Celery, store: Callable[[], RunStore]) -> None:
    """The chain's errback; Celery calls it synchronously where a phase failed."""

    @app.task(name=RUN_FAILED_TASK, shared=False)  # type: ignore[untyped-decorator]
    def run_failed(request: Any, exc: BaseException, traceback: Any, run_id: str) -> None:
        del traceback
        try:
            _record_failure(store(), request, exc)
        except Exception:  # the errback must not hide the phase's own failure
            log.exception("could not record the failure of a phase of run %s", run_id)


def install_run_recording(app: Celery, store: Callable[[], RunStore]) -> None:
    """Record the ordinary phases this app's workers run, and register the errback."""
    register_run_failed(app, store)

    def ours(task: Any) -> bool:
        return getattr(task, "app", None) is app and getattr(task, "name", "") != CODEX_PHASE_TASK

    @task_prerun.connect(weak=False)  # type: ignore[untyped-decorator]
    def _started(
        sender: Any = None, task_id: str | None = None, task: Any = None, **_: Any
    ) -> None:
        found = run_phase_of(task.request) if task is not None and ours(task) else None
        if found is None:
            return
        run_id, phase, attempt = found
        store().begin_attempt(
            run_id, phase, attempt, task_id=task_id, container_name="", log_path=""
        )

    @task_success.connect(weak=False)  # type: ignore[untyped-decorator]
    def _succeeded(sender: Any = None, **_: Any) -> None:
        found = run_phase_of(sender.request) if sender is not None and ours(sender) else None
        if found is None:
            return
        run_id, phase, attempt = found
        store().finish_attempt(run_id, phase, attempt, status="succeeded", exit_code=0)
        store().settle_run(run_id)

    @task_failure.connect(weak=False)  # type: ignore[untyped-decorator]
    def _failed(sender: Any = None, exception: BaseException | None = None, **_: Any) -> None:
        if sender is not None and ours(sender) and exception is not None:
            _record_failure(store(), sender.request, exception)
