"""A Celery router that sends Codex tasks to their run's shard queue and leaves the rest alone.

Use it in any Celery app: :func:`install_routing`, or
``app.conf.task_routes = (CodexRouter(settings, store),)``. This module is the producer's side:
it imports neither Docker nor Celery code. A task is a Codex task when it is declared
with ``@app.task(codex=True)`` or its name matches ``MOONMIND_CODEX_CODEX_TASK_PATTERNS``.
Non-Codex tasks get ``None`` back, so the app's other routes and its default queue apply.

The affinity key, in order: ``affinity_key`` kwarg or ``moonmind_codex_affinity`` header (a
per-call override), else the ``repository`` kwarg, else the ``run_id`` kwarg.

Failover (``MOONMIND_CODEX_FAILOVER``, off by default): when a run gets its first queue and
the store reports the key's shard quarantined or fenced, a healthy shard is chosen
(:mod:`moonmind_codex.core.failover`); that choice is then sticky like any other.

Sticky runs: a run keeps the queue of its first Codex phase, through the assignment store (one
SQLite file per producer host by default) or, for producers on several hosts, by passing the
``queue`` of an earlier phase's result in the ``moonmind_codex_queue`` header, which wins over
the store and the key. An explicit ``queue=`` given to ``apply_async`` wins over every router
(Celery's rule): don't pass one for Codex tasks.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from moonmind_codex.core.assignments import AssignmentStore
from moonmind_codex.core.failover import failover_shard
from moonmind_codex.core.routing import shard_for_key, shard_queue
from moonmind_codex.settings import Settings

AFFINITY_HEADER = "moonmind_codex_affinity"
QUEUE_HEADER = "moonmind_codex_queue"


class RoutingError(ValueError):
    """A Codex task cannot be routed; the message names the task and what to pass."""


@dataclass(frozen=True)
class RouteDecision:
    key: str
    shard: int | None  # None in single-queue mode: any Codex worker may take it
    queue: str


def route_key(key: str, settings: Settings) -> RouteDecision:
    """The queue for affinity key ``key`` under ``settings`` (pure)."""
    if not isinstance(key, str) or not key.strip():
        raise RoutingError("the affinity key must be a non-empty string")
    if settings.queue_mode == "single":
        return RouteDecision(key=key, shard=None, queue=settings.single_queue)
    shard = shard_for_key(key, settings.shard_count)
    return RouteDecision(key=key, shard=shard, queue=shard_queue(settings.queue_prefix, shard))


def is_codex_task(name: str, task: Any, patterns: Sequence[str]) -> bool:
    if getattr(task, "codex", False) is True:
        return True
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def affinity_key(kwargs: Mapping[str, Any] | None, options: Mapping[str, Any] | None) -> str | None:
    kwargs = kwargs or {}
    headers = (options or {}).get("headers") or {}
    for candidate in (
        kwargs.get("affinity_key"),
        headers.get(AFFINITY_HEADER),
        kwargs.get("repository"),
        kwargs.get("run_id"),
    ):
        if isinstance(candidate, str) and candidate.strip():
            return candidate
    return None


def pinned_queue(options: Mapping[str, Any] | None, settings: Settings) -> str | None:
    """The queue named by the ``moonmind_codex_queue`` header, checked against the fleet."""
    headers = (options or {}).get("headers") or {}
    value = headers.get(QUEUE_HEADER)
    if value is None:
        return None
    if settings.queue_mode == "single":
        valid = value == settings.single_queue
        expected = repr(settings.single_queue)
    else:
        valid = isinstance(value, str) and bool(
            re.fullmatch(rf"{re.escape(settings.queue_prefix)}-(0|[1-9][0-9]*)", value)
        )
        expected = f"'{settings.queue_prefix}-N'"
    if not valid:
        raise RoutingError(
            f"header {QUEUE_HEADER}={value!r} is not a Codex queue of this fleet (expected "
            f"{expected}): pass the 'queue' of the run's first phase result, or no header"
        )
    return str(value)


class CodexRouter:
    """Celery router callable: ``(name, args, kwargs, options, task=None, **kw)``."""

    def __init__(self, settings: Settings, store: AssignmentStore | None = None) -> None:
        self.settings = settings
        self.store = store

    def __call__(
        self,
        name: str,
        args: Any,
        kwargs: Mapping[str, Any] | None,
        options: Mapping[str, Any] | None,
        task: Any = None,
        **_: Any,
    ) -> dict[str, str] | None:
        if not is_codex_task(name, task, self.settings.codex_task_patterns):
            return None
        carried = pinned_queue(options, self.settings)
        if carried is not None:
            return {"queue": carried, "routing_key": carried}
        run_id = (kwargs or {}).get("run_id")
        if self.store is not None and isinstance(run_id, str) and run_id:
            pinned = self.store.queue_for_run(run_id)
            if pinned is not None:
                return {"queue": pinned, "routing_key": pinned}
        key = affinity_key(kwargs, options)
        if key is None:
            raise RoutingError(
                f"Codex task {name} has no affinity key: pass run_id= (and preferably "
                "repository=) as keyword arguments, or affinity_key= to choose the shard"
            )
        queue = self._first_queue(key)
        if self.store is not None and isinstance(run_id, str) and run_id:
            queue = self.store.assign(run_id, queue)
        return {"queue": queue, "routing_key": queue}

    def _first_queue(self, key: str) -> str:
        """The key's queue; with failover on, a healthy shard's when the key's is not."""
        decision = route_key(key, self.settings)
        unavailable_shards = getattr(self.store, "unavailable_shards", None)
        if not self.settings.failover or decision.shard is None or unavailable_shards is None:
            return decision.queue
        shard = failover_shard(key, decision.shard, self.settings.shard_count, unavailable_shards())
        return shard_queue(self.settings.queue_prefix, shard)


def install_routing(app: Any, settings: Settings, store: AssignmentStore | None = None) -> None:
    """Put the Codex router in front of a Celery app's existing routes; other tasks untouched."""
    existing = app.conf.task_routes
    if existing is None:
        routes: tuple[Any, ...] = ()
    elif isinstance(existing, list | tuple):
        routes = tuple(existing)
    else:
        routes = (existing,)
    app.conf.task_routes = (CodexRouter(settings, store), *routes)
    app.conf.task_default_queue = settings.default_queue
    if not settings.declare_queues:
        app.conf.task_queues = fleet_queues(settings)


def fleet_queues(settings: Settings) -> list[Any]:
    """The default queue and every Codex queue, as the broker's definitions declare them.

    Marked ``no_declare``: on a provisioned fleet the broker's users may use these queues but
    not declare, bind or delete them (that would need RabbitMQ's configure permission, which
    would also let a user bind its own queue to a shard's exchange and read its tasks).
    Each queue has a topic exchange of its name, bound by exactly that name: Celery sends a
    task for a direct exchange through the default exchange, and publishing there is allowed
    only together with publishing to every queue, which producers must not have.
    """
    from kombu.entity import Exchange, Queue

    names = [settings.default_queue]
    if settings.queue_mode == "single":
        names.append(settings.single_queue)
    else:
        names += [settings.queue_for_shard(n) for n in range(settings.shard_count)]
    return [
        Queue(  # type: ignore[no-untyped-call]
            name,
            Exchange(name, "topic", durable=True),  # type: ignore[no-untyped-call]
            routing_key=name,
            durable=True,
            no_declare=True,
        )
        for name in names
    ]
