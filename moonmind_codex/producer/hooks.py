"""The publish-phase hook: a host application's task that receives a finished run's context.

A run's last phase is usually "publish": open a pull request from the run's workspace. That
stays with the host application (it owns the repository credentials); this hook hands it what
the run produced::

    from moonmind_codex.producer.hooks import RunContext, publish_hook

    @app.task(name="myapp.publish")
    @publish_hook(store_factory)
    def publish(context: RunContext, draft: bool = False) -> str:
        ...  # context.workspace_volume, context.workspace_path, context.phases, context.logs

and in the run definition: ``{name: publish, task: myapp.publish, kwargs: {draft: true}}``.
The hook reads the run from the message's headers and the run store; a task called outside a
run gets a clear error instead of a half-filled context.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from celery import current_task

from moonmind_codex.core.workspace import DEFAULT_PREFIX, run_volume_name, workspace_path
from moonmind_codex.producer.recording import run_phase_of
from moonmind_codex.store.models import PhaseAttempt
from moonmind_codex.store.runstore import RunStore

R = TypeVar("R")


class NotInARun(RuntimeError):
    """A publish hook was called outside a run's chain."""


@dataclass(frozen=True)
class RunContext:
    """What a run produced, for the host application's publish step."""

    run_id: str
    phase: str
    repository: str | None
    queue: str | None
    shard: int | None
    host: str | None
    # The run's working tree: directory ``workspace_path`` when the run's own Docker volume
    # ``workspace_volume`` on ``host`` is mounted at /work, as its jobs mount it.
    workspace_volume: str
    workspace_path: str
    # The latest attempt of each earlier phase, in run order, and their log files.
    phases: tuple[PhaseAttempt, ...]

    @property
    def logs(self) -> dict[str, str]:
        return {a.phase: a.log_path for a in self.phases if a.log_path}


def run_context(
    store: RunStore, run_id: str, phase: str, workspace_volume_prefix: str = DEFAULT_PREFIX
) -> RunContext:
    record = store.get_run(run_id)
    if record is None:
        raise NotInARun(f"run {run_id} is not in the run store")
    # In run order (the store lists attempts by position).
    earlier = tuple(a for name, a in store.latest_states(run_id).items() if name != phase)
    return RunContext(
        run_id=run_id,
        phase=phase,
        repository=record.repository,
        queue=record.queue,
        shard=record.shard,
        host=record.host,
        workspace_volume=run_volume_name(workspace_volume_prefix, run_id),
        workspace_path=workspace_path(run_id),
        phases=earlier,
    )


def publish_hook(
    store: Callable[[], RunStore], workspace_volume_prefix: str = DEFAULT_PREFIX
) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Decorate a host task so that it is called with the run's :class:`RunContext` first.

    ``workspace_volume_prefix`` is the fleet's ``MOONMIND_CODEX_WORKSPACE_VOLUME_PREFIX``.
    """

    def decorate(function: Callable[..., R]) -> Callable[..., R]:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> R:
            task = current_task
            found = run_phase_of(task.request) if task else None
            if found is None:
                raise NotInARun(
                    f"{getattr(task, 'name', function.__name__)} is a publish hook: send it as a "
                    "phase of a run (moonmind_codex.producer.submit.submit_run), not on its own"
                )
            run_id, phase, _ = found
            return function(
                run_context(store(), run_id, phase, workspace_volume_prefix), *args, **kwargs
            )

        return wrapper

    return decorate
