"""Failover of new runs: the rendezvous rule and the router's use of it at first assignment."""

from __future__ import annotations

import hashlib
from collections import Counter

from moonmind_codex.core.assignments import MemoryAssignmentStore
from moonmind_codex.core.failover import failover_shard, score
from moonmind_codex.producer.router import CodexRouter, route_key
from moonmind_codex.settings import Settings

KEYS = [f"org/repo-{i}" for i in range(600)]


def test_the_score_is_a_stable_digest_of_key_and_shard() -> None:
    expected = int.from_bytes(hashlib.sha256(b"org/a\x002").digest()[:8], "big")
    assert score("org/a", 2) == expected
    assert score("org/a", 3) != expected


def test_an_available_primary_stands() -> None:
    assert failover_shard("org/a", 2, 4, {1, 3}) == 2
    assert failover_shard("org/a", 2, 4, set()) == 2


def test_an_unavailable_primary_gives_the_best_scored_healthy_shard() -> None:
    for key in KEYS[:50]:
        chosen = failover_shard(key, 1, 4, {1})
        healthy = [0, 2, 3]
        assert chosen == max(healthy, key=lambda n: score(key, n))
        assert failover_shard(key, 1, 4, {1, chosen}) in set(healthy) - {chosen}


def test_ties_go_to_the_lower_shard(monkeypatch: object) -> None:
    import moonmind_codex.core.failover as module

    setattr(module, "score", lambda key, shard: 1)  # noqa: B010
    try:
        assert failover_shard("k", 0, 4, {0}) == 1
    finally:
        setattr(module, "score", score)  # noqa: B010


def test_when_no_shard_is_healthy_the_primary_stands() -> None:
    assert failover_shard("org/a", 1, 3, {0, 1, 2}) == 1


def test_the_keys_of_a_lost_shard_spread_over_all_the_others() -> None:
    moved = Counter(failover_shard(key, 0, 4, {0}) for key in KEYS)
    assert set(moved) == {1, 2, 3}
    assert min(moved.values()) > len(KEYS) / 3 * 0.7


class HealthStore(MemoryAssignmentStore):
    def __init__(self, unavailable: set[int]) -> None:
        super().__init__()
        self.unavailable = unavailable
        self.asked = 0

    def unavailable_shards(self) -> set[int]:
        self.asked += 1
        return set(self.unavailable)


def route(router: CodexRouter, run_id: str, key: str) -> str:
    found = router("moonmind_codex.codex_phase", (), {"run_id": run_id, "repository": key}, {})
    assert found is not None
    return found["queue"]


def key_on(settings: Settings, shard: int) -> str:
    return next(k for k in KEYS if route_key(k, settings).shard == shard)


def test_with_failover_a_new_run_leaves_an_unavailable_shard_and_stays_where_it_went() -> None:
    settings = Settings(shard_count=3, failover=True)
    store = HealthStore({1})
    router = CodexRouter(settings, store)
    key = key_on(settings, 1)
    first = route(router, "run-new", key)
    assert first == f"codex-{failover_shard(key, 1, 3, {1})}" != "codex-1"
    store.unavailable = {0, 2}  # shard 1 healthy again, the chosen one not: the run stays
    assert route(router, "run-new", key) == first
    # A run assigned before the quarantine does not move.
    store.unavailable = set()
    assert route(router, "run-old", key) == "codex-1"
    store.unavailable = {1}
    assert route(router, "run-old", key) == "codex-1"


def test_without_failover_the_key_decides_and_health_is_not_asked() -> None:
    settings = Settings(shard_count=3)
    store = HealthStore({1})
    key = key_on(settings, 1)
    assert route(CodexRouter(settings, store), "run-x", key) == "codex-1"
    assert store.asked == 0


def test_failover_needs_a_store_that_knows_health_and_sharded_queues() -> None:
    settings = Settings(shard_count=3, failover=True)
    key = key_on(settings, 1)
    assert route(CodexRouter(settings, MemoryAssignmentStore()), "run-y", key) == "codex-1"
    single = Settings(shard_count=3, failover=True, queue_mode="single")
    store = HealthStore({0, 1, 2})
    assert route(CodexRouter(single, store), "run-z", key) == "codex"
    assert store.asked == 0
