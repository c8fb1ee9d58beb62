"""Submit, retry and cancel runs: a Celery chain of immutable signatures, recorded first.

The producer's side of runs (``moonmind-codex runs ...`` and host applications):

- :func:`submit_run` records the run and a pending attempt for every phase, then sends one
  chain; every Codex phase carries the run's queue explicitly (chosen once, sticky), every
  ordinary phase goes to the default queue. A phase that fails stops the chain; the errback
  (``link_error``) records it.
- :func:`retry_run` resumes from the first phase whose latest attempt did not succeed, as a new
  attempt of it; a succeeded phase is never sent again.
- :func:`cancel_run` records the cancellation (workers check it before and during a job: the job
  container is stopped) and revokes the phases not started yet.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from celery import Celery, chain

from moonmind_codex.core.runs import (
    RunDefinition,
    RunDefinitionError,
    parse_run_definition,
    resume_point,
)
from moonmind_codex.producer.router import CodexRouter
from moonmind_codex.settings import Settings
from moonmind_codex.store.models import utcnow
from moonmind_codex.store.runstore import RunStore

CODEX_PHASE_TASK = "moonmind_codex.codex_phase"
RUN_FAILED_TASK = "moonmind_codex.run_failed"
# Headers on every phase's message: any worker with run recording installed records it.
RUN_HEADER, PHASE_HEADER, ATTEMPT_HEADER = (
    "moonmind_codex_run",
    "moonmind_codex_phase",
    "moonmind_codex_attempt",
)


class RunNotFound(KeyError):
    """No run with that id is recorded."""


def _signature(
    app: Celery,
    definition: RunDefinition,
    position: int,
    attempt: int,
    task_id: str,
    queue: str,
    settings: Settings,
) -> Any:
    phase = definition.phases[position]
    headers = {RUN_HEADER: definition.run_id, PHASE_HEADER: phase.name, ATTEMPT_HEADER: attempt}
    if phase.codex:
        kwargs: dict[str, Any] = {
            "run_id": definition.run_id,
            "phase": phase.name,
            "command": list(phase.command or ()),
            "repository": definition.repository,
            "affinity_key": definition.key,
            "timeout_s": phase.timeout_s,
            "attempt": attempt,
            "position": position,
        }
        return app.signature(
            CODEX_PHASE_TASK,
            kwargs=kwargs,
            immutable=True,
            queue=queue,
            task_id=task_id,
            headers=headers,
        )
    return app.signature(
        phase.task,
        kwargs=dict(phase.kwargs),
        immutable=True,
        queue=settings.default_queue,
        task_id=task_id,
        headers=headers,
    )


def _queue_of(definition: RunDefinition, settings: Settings, store: RunStore) -> str:
    """The run's Codex queue: its recorded one, else routed by its key and recorded (sticky)."""
    route = CodexRouter(settings, store)(
        CODEX_PHASE_TASK,
        (),
        {"run_id": definition.run_id, "affinity_key": definition.key},
        {},
    )
    if route is None:  # pragma: no cover - the task is a Codex task by its name
        raise RuntimeError(f"{CODEX_PHASE_TASK} was not routed as a Codex task")
    return route["queue"]


def _send(
    app: Celery,
    definition: RunDefinition,
    start: int,
    attempts: dict[str, int],
    settings: Settings,
    store: RunStore,
) -> str:
    queue = _queue_of(definition, settings, store)
    planned = [
        (definition.phases[n].name, n, attempts[definition.phases[n].name], str(uuid.uuid4()))
        for n in range(start, len(definition.phases))
    ]
    store.plan_attempts(definition.run_id, planned)
    links = [
        _signature(app, definition, n, attempt, task_id, queue, settings)
        for (_, n, attempt, task_id) in planned
    ]
    workflow = chain(*links)
    workflow.link_error(
        app.signature(RUN_FAILED_TASK, kwargs={"run_id": definition.run_id}, immutable=False)
    )
    result = workflow.apply_async()
    store.update_run(
        definition.run_id,
        chain_id=result.id,
        queue=queue,
        status="pending" if start == 0 else "running",
        finished_at=None,
    )
    return definition.run_id


def submit_run(
    app: Celery, definition: RunDefinition | dict[str, Any], settings: Settings, store: RunStore
) -> str:
    """Record and send a run; returns its id. A run id already recorded is refused."""
    run = definition if isinstance(definition, RunDefinition) else parse_run_definition(definition)
    if store.get_run(run.run_id) is not None:
        raise RunDefinitionError(
            f"run {run.run_id} already exists: use `moonmind-codex runs retry {run.run_id}` to "
            "resume it, or give the new run another id"
        )
    store.ensure_run(
        run.run_id,
        repository=run.repository,
        affinity_key=run.key,
        status="pending",
        definition=json.dumps(run.to_dict(), sort_keys=True),
        created_at=utcnow(),
    )
    return _send(app, run, 0, {p.name: 1 for p in run.phases}, settings, store)


def stored_definition(store: RunStore, run_id: str) -> RunDefinition:
    record = store.get_run(run_id)
    if record is None:
        raise RunNotFound(run_id)
    if record.definition is None:
        raise RunDefinitionError(
            f"run {run_id} was not submitted as a run (its phases were sent one by one), so it "
            "cannot be retried as a whole; send the failed phase again"
        )
    return parse_run_definition(json.loads(record.definition))


def retry_run(app: Celery, run_id: str, settings: Settings, store: RunStore) -> str | None:
    """Resume ``run_id`` from its first unsucceeded phase; None when every phase succeeded."""
    definition = stored_definition(store, run_id)
    latest = store.latest_states(run_id)
    names = [p.name for p in definition.phases]
    start = resume_point(names, {name: a.status for name, a in latest.items()})
    if start is None:
        store.settle_run(run_id)
        return None
    if any(a.status in ("running", "busy") for a in latest.values()):
        raise RunDefinitionError(
            f"run {run_id} still has a phase running; wait for it or cancel the run first"
        )
    attempts = {}
    for name in names[start:]:
        previous = latest.get(name)
        # A phase that never started keeps its planned attempt; one that ended gets the next.
        attempts[name] = (
            1 if previous is None else previous.attempt + (0 if previous.status == "pending" else 1)
        )
    store.update_run(run_id, status="running", preflight_status=None, preflight_message=None)
    return _send(app, definition, start, attempts, settings, store)


def cancel_run(app: Celery, run_id: str, store: RunStore) -> list[str]:
    """Record the cancellation and revoke the run's phases that are still open."""
    if store.get_run(run_id) is None:
        raise RunNotFound(run_id)
    opened = store.cancel_run(run_id)
    task_ids = [a.task_id for a in opened if a.task_id]
    # Not started: replayed as cancelled by the worker that receives it (the store says so).
    # Started: the worker sees the cancellation in the store and stops the job container.
    # Revoking as well needs remote control, which shard workers have off by default.
    if task_ids and app.conf.worker_enable_remote_control:
        app.control.revoke(task_ids)
    return task_ids
