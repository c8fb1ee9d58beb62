from __future__ import annotations

import multiprocessing
from pathlib import Path
from types import SimpleNamespace

import pytest

from moonmind_codex.core.assignments import MemoryAssignmentStore
from moonmind_codex.core.routing import shard_for_key
from moonmind_codex.producer.router import (
    CodexRouter,
    RouteDecision,
    RoutingError,
    affinity_key,
    install_routing,
    route_key,
)
from moonmind_codex.settings import Settings
from moonmind_codex.store.runstore import RunStore

SETTINGS = Settings(shard_count=3)
CODEX_TASK = SimpleNamespace(codex=True)


def test_non_codex_tasks_are_left_alone() -> None:
    router = CodexRouter(SETTINGS, MemoryAssignmentStore())
    assert router("app.send_email", (), {"run_id": "r1"}, {}, task=SimpleNamespace()) is None
    assert router("app.send_email", (), {}, {}) is None


def test_codex_tasks_by_attribute_or_name_pattern() -> None:
    router = CodexRouter(SETTINGS)
    expected = route_key("org/repo", SETTINGS).queue
    assert router("app.submit", (), {"repository": "org/repo"}, {}, task=CODEX_TASK) == {
        "queue": expected,
        "routing_key": expected,
    }
    assert router("app.codex_submit", (), {"repository": "org/repo"}, {})["queue"] == expected
    # A truthy non-True attribute (e.g. a Mock) is not a declaration.
    assert router("app.submit", (), {"repository": "x"}, {}, task=SimpleNamespace(codex=1)) is None


def test_affinity_key_order() -> None:
    assert affinity_key({"affinity_key": "a", "repository": "r", "run_id": "i"}, {}) == "a"
    assert (
        affinity_key(
            {"repository": "r", "run_id": "i"}, {"headers": {"moonmind_codex_affinity": "h"}}
        )
        == "h"
    )
    assert affinity_key({"repository": "r", "run_id": "i"}, {}) == "r"
    assert affinity_key({"run_id": "i"}, None) == "i"
    assert affinity_key({"repository": ""}, {}) is None


def test_codex_task_without_key_is_a_clear_error() -> None:
    with pytest.raises(RoutingError) as caught:
        CodexRouter(SETTINGS)("app.codex_x", (), {}, {})
    assert str(caught.value) == (
        "Codex task app.codex_x has no affinity key: pass run_id= (and preferably repository=) "
        "as keyword arguments, or affinity_key= to choose the shard"
    )


def test_a_route_decision_names_the_key_its_shard_and_queue() -> None:
    shard = shard_for_key("org/repo", 3)
    assert route_key("org/repo", SETTINGS) == RouteDecision("org/repo", shard, f"codex-{shard}")
    single = route_key("org/repo", Settings(queue_mode="single", queue_prefix="cx"))
    assert single == RouteDecision("org/repo", None, "cx")


def test_the_affinity_header_steers_a_codex_task_through_the_router() -> None:
    keys = [f"repo-{i}" for i in range(50)]
    header, repository = next(
        (a, b) for a in keys for b in keys if route_key(a, SETTINGS) != route_key(b, SETTINGS)
    )
    route = CodexRouter(SETTINGS)(
        "app.codex_plan",
        (),
        {"repository": repository},
        {"headers": {"moonmind_codex_affinity": header}},
    )
    expected = route_key(header, SETTINGS).queue
    assert route == {"queue": expected, "routing_key": expected}


class RecordingStore(MemoryAssignmentStore):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, ...]] = []

    def queue_for_run(self, run_id: str) -> str | None:
        self.calls.append(("queue_for_run", run_id))
        return super().queue_for_run(run_id)

    def assign(self, run_id: str, queue: str) -> str:
        self.calls.append(("assign", run_id, queue))
        return super().assign(run_id, queue)


def test_a_run_is_assigned_once_then_only_looked_up() -> None:
    store = RecordingStore()
    router = CodexRouter(SETTINGS, store)
    first = router("app.codex_a", (), {"run_id": "run-7", "repository": "org/repo"}, {})
    assert first is not None
    queue = first["queue"]
    assert store.calls == [("queue_for_run", "run-7"), ("assign", "run-7", queue)]
    store.calls.clear()
    # A later phase (even one whose key points elsewhere) reads the run's queue, writes nothing.
    later = router("app.codex_b", (), {"run_id": "run-7", "affinity_key": "other"}, {})
    assert later == {"queue": queue, "routing_key": queue}
    assert store.calls == [("queue_for_run", "run-7")]
    assert store.queue_for_run("run-7") == queue and store.queue_for_run("run-8") is None


def test_install_routing_puts_the_codex_router_first_and_keeps_the_apps_routes() -> None:
    def other(*args: object, **kwargs: object) -> None:
        return None

    store = MemoryAssignmentStore()
    settings = Settings(shard_count=3, default_queue="work")
    for existing, kept in ((None, ()), ([other], (other,)), (other, (other,)), ((), ())):
        app = SimpleNamespace(conf=SimpleNamespace(task_routes=existing, task_default_queue="x"))
        install_routing(app, settings, store)
        router, *rest = app.conf.task_routes
        assert isinstance(router, CodexRouter) and tuple(rest) == kept
        assert router.settings is settings and router.store is store
        assert app.conf.task_default_queue == "work"
        assert not hasattr(app.conf, "task_queues")  # the app declares its queues itself


def test_install_routing_names_the_fleets_queues_when_the_broker_declares_them() -> None:
    app = SimpleNamespace(conf=SimpleNamespace(task_routes=None))
    install_routing(app, Settings(shard_count=2, default_queue="work", declare_queues=False))
    assert [q.name for q in app.conf.task_queues] == ["work", "codex-0", "codex-1"]
    # Durable like the broker's definitions: a client never re-declares them differently.
    assert all(q.durable and q.exchange.durable for q in app.conf.task_queues)
    single = SimpleNamespace(conf=SimpleNamespace(task_routes=None))
    install_routing(single, Settings(queue_mode="single", declare_queues=False))
    assert [q.name for q in single.conf.task_queues] == ["celery", "codex"]


def test_sticky_run_keeps_its_queue_when_the_fleet_grows() -> None:
    store = MemoryAssignmentStore()
    small, large = Settings(shard_count=3), Settings(shard_count=16)
    key = next(
        k
        for k in (f"repo-{i}" for i in range(100))
        if route_key(k, small).queue != route_key(k, large).queue
    )
    first = CodexRouter(small, store)("x.codex_a", (), {"run_id": "run-1", "repository": key}, {})
    later = CodexRouter(large, store)("x.codex_b", (), {"run_id": "run-1", "repository": key}, {})
    fresh = CodexRouter(large, store)("x.codex_b", (), {"run_id": "run-2", "repository": key}, {})
    assert first == later
    assert fresh is not None and first is not None and fresh["queue"] != first["queue"]


def test_single_queue_mode() -> None:
    settings = Settings(queue_mode="single")
    assert route_key("anything", settings).queue == "codex"
    assert route_key("anything", settings).shard is None
    assert CodexRouter(settings)("x.codex_a", (), {"run_id": "r"}, {}) == {
        "queue": "codex",
        "routing_key": "codex",
    }


def test_route_key_rejects_empty() -> None:
    for key in (" ", "", None):
        with pytest.raises(RoutingError) as caught:
            route_key(key, SETTINGS)  # type: ignore[arg-type]
        assert str(caught.value) == "the affinity key must be a non-empty string"


def _race(path: str, run_id: str, queue: str, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    out.put(RunStore.open(f"sqlite:///{path}").assign(run_id, queue))


def test_sqlite_store_first_writer_wins_across_processes(tmp_path: Path) -> None:
    db = tmp_path / "state" / "runs.sqlite3"
    store = RunStore.open(f"sqlite:///{db}")
    assert store.queue_for_run("r") is None
    out: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    procs = [
        multiprocessing.Process(target=_race, args=(str(db), "race", f"codex-{i}", out))
        for i in range(6)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=30)
    answers = {out.get(timeout=5) for _ in procs}
    assert len(answers) == 1
    assert store.queue_for_run("race") == answers.pop()
    assert store.assign("r", "codex-1") == "codex-1"
    assert store.assign("r", "codex-2") == "codex-1"


def test_queue_header_carries_a_run_to_its_queue_without_a_store() -> None:
    """Producers on several hosts: the first phase's result queue, carried in a header."""
    grown = Settings(shard_count=16)
    key = next(
        k
        for k in (f"repo-{i}" for i in range(100))
        if route_key(k, SETTINGS).queue != route_key(k, grown).queue
    )
    first_queue = route_key(key, SETTINGS).queue
    store = MemoryAssignmentStore()
    route = CodexRouter(grown, store)(
        "app.codex_plan",
        (),
        {"run_id": "r-1", "repository": key},
        {"headers": {"moonmind_codex_queue": first_queue}},
    )
    assert route == {"queue": first_queue, "routing_key": first_queue}


@pytest.mark.parametrize(
    ("settings", "value"),
    [
        (SETTINGS, "celery"),
        (SETTINGS, "codex-x"),
        (SETTINGS, "codex-01"),
        (SETTINGS, "codex"),
        (SETTINGS, 3),
        (Settings(queue_mode="single"), "codex-1"),
    ],
)
def test_bad_queue_header_is_a_clear_error(settings: Settings, value: object) -> None:
    with pytest.raises(RoutingError) as caught:
        CodexRouter(settings)(
            "app.codex_plan", (), {"run_id": "r"}, {"headers": {"moonmind_codex_queue": value}}
        )
    expected = "'codex'" if settings.queue_mode == "single" else "'codex-N'"
    assert str(caught.value) == (
        f"header moonmind_codex_queue={value!r} is not a Codex queue of this fleet (expected "
        f"{expected}): pass the 'queue' of the run's first phase result, or no header"
    )


def test_queue_header_in_single_queue_mode() -> None:
    single = Settings(queue_mode="single")
    route = CodexRouter(single)(
        "app.codex_x", (), {"run_id": "r"}, {"headers": {"moonmind_codex_queue": "codex"}}
    )
    assert route == {"queue": "codex", "routing_key": "codex"}
