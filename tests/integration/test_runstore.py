"""The run store on both databases it supports: SQLite (WAL) and a real PostgreSQL cluster."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, make_url, text

from harness.postgres import running_postgres
from moonmind_codex.core.keepalive import ShardActivity
from moonmind_codex.core.shard import Shard
from moonmind_codex.store.engine import make_engine, migrate
from moonmind_codex.store.runstore import RunStore


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with running_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a database with no schema yet."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'state' / 'runs.sqlite3'}"
    else:
        base = request.getfixturevalue("postgres_url")
        # A database per test: tests never see each other's rows.
        name = f"t_{abs(hash(request.node.nodeid)) % 10**12}"
        admin = make_engine(base)
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        url = make_url(base).set(database=name).render_as_string(hide_password=False)
    return url


@pytest.fixture
def store(empty_database: str) -> Iterator[RunStore]:
    opened = RunStore.open(empty_database)
    yield opened
    opened.engine.dispose()


def _open_when_all_are_ready(url: str, ready: Any) -> None:
    ready.wait(60)
    RunStore.open(url).engine.dispose()


def test_workers_starting_together_migrate_one_database_once(empty_database: str) -> None:
    # The shards of a host start at the same moment, each migrating the shared database.
    context = multiprocessing.get_context("spawn")
    ready = context.Barrier(6)
    processes = [
        context.Process(target=_open_when_all_are_ready, args=(empty_database, ready))
        for _ in range(6)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
    assert [p.exitcode for p in processes] == [0] * 6
    engine = make_engine(empty_database)
    with engine.connect() as connection:
        versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    engine.dispose()
    assert [v[0] for v in versions] == ["0003"]


def test_migrations_create_the_schema_and_run_again_as_a_no_op(store: RunStore) -> None:
    tables = set(inspect(store.engine).get_table_names())
    assert {"spec_workflow_runs", "spec_workflow_task_states", "run_queue_assignments"} <= tables
    assert {"shard_health", "shard_health_events", "alembic_version"} <= tables
    migrate(store.engine)  # a second start-up: nothing to do, nothing breaks
    with store.engine.connect() as connection:
        assert (
            connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0003"
        )


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    opened = RunStore.open(f"sqlite:///{tmp_path / 'w.sqlite3'}")
    with opened.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_first_queue_assignment_wins_across_concurrent_producers(store: RunStore) -> None:
    results: list[str] = []

    def producer(queue: str) -> None:
        results.append(store.assign("run-sticky", queue))

    threads = [threading.Thread(target=producer, args=(f"codex-{n}",)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 6 and len(set(results)) == 1
    assert store.queue_for_run("run-sticky") == results[0]
    assert store.queue_for_run("never-assigned") is None


def test_a_final_attempt_is_never_started_again(store: RunStore) -> None:
    store.ensure_run("run-1", repository="org/repo", affinity_key="org/repo")
    first = store.begin_attempt(
        "run-1", "plan", 1, task_id="t1", container_name="c", log_path="/l", position=2
    )
    assert (first.status, first.task_id, first.final) == ("running", "t1", False)
    done = store.finish_attempt("run-1", "plan", 1, status="succeeded", exit_code=0)
    assert (done.status, done.exit_code, done.final) == ("succeeded", 0, True)
    # A redelivery of the same attempt sees the recorded end, under any task id.
    again = store.begin_attempt("run-1", "plan", 1, task_id="t2", container_name="c", log_path="/l")
    assert (again.status, again.task_id, again.exit_code) == ("succeeded", "t1", 0)
    # ... and a late "failed" from a confused delivery does not overwrite it.
    kept = store.finish_attempt("run-1", "plan", 1, status="failed", exit_code=1)
    assert (kept.status, kept.exit_code) == ("succeeded", 0)
    # A new attempt (runs retry) is a new row.
    second = store.begin_attempt(
        "run-1", "plan", 2, task_id="t3", container_name="c", log_path="/l", position=2
    )
    assert second.status == "running"
    assert [a.attempt for a in store.attempts("run-1", "plan")] == [1, 2]


def test_concurrent_deliveries_record_one_attempt(store: RunStore) -> None:
    store.ensure_run("run-race")
    seen: list[str | None] = []
    barrier = threading.Barrier(4)

    def delivery(task: str) -> None:
        barrier.wait(timeout=30)
        seen.append(
            store.begin_attempt(
                "run-race", "tasks", 1, task_id=task, container_name="c", log_path="/l"
            ).task_id
        )

    threads = [threading.Thread(target=delivery, args=(f"t{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(seen) == 4
    assert len(store.attempts("run-race")) == 1


def test_runs_are_listed_by_status_and_shard(store: RunStore) -> None:
    for n, (status, shard) in enumerate([("running", 0), ("blocked", 1), ("running", 1)]):
        store.ensure_run(f"run-{n}", status=status, shard=shard)
    assert {r.id for r in store.list_runs(status="running")} == {"run-0", "run-2"}
    assert {r.id for r in store.list_runs(shard=1)} == {"run-1", "run-2"}
    assert {r.id for r in store.list_runs(status="running", shard=1)} == {"run-2"}
    store.update_run("run-1", status="succeeded", preflight_message="ok")
    found = store.get_run("run-1")
    assert found is not None and (found.status, found.preflight_message) == ("succeeded", "ok")
    with pytest.raises(KeyError):
        store.update_run("absent", status="failed")


def test_deleting_a_run_deletes_its_attempts(store: RunStore, tmp_path: Path) -> None:
    store.ensure_run("run-gone")
    store.begin_attempt("run-gone", "p", 1, task_id=None, container_name="c", log_path="/l")
    with store.engine.begin() as connection:
        connection.execute(text("DELETE FROM spec_workflow_runs WHERE id = 'run-gone'"))
    assert store.attempts("run-gone") == []


def test_a_store_at_the_first_revision_is_upgraded_with_its_runs_kept(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    migrate(engine, "0001")
    RunStore(engine).ensure_run("run-old", status="running")
    assert "shard_health" not in inspect(engine).get_table_names()
    upgraded = RunStore.open(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    found = upgraded.get_run("run-old")
    assert found is not None and found.status == "running"
    assert upgraded.shard_health("codex_auth_0") is None


def test_a_rejected_login_quarantines_its_shard_until_a_new_login_lifts_it(
    store: RunStore,
) -> None:
    old, new = "a" * 64, "b" * 64
    assert store.shard_health("codex_auth_1") is None
    first = store.quarantine(
        "codex_auth_1", host="h", shard=1, reason="refresh_token_reused", auth_digest=old,
        run_id="run-1", phase="plan",
    )  # fmt: skip
    assert (first.status, first.reason, first.auth_digest, first.quarantined) == (
        "quarantined",
        "refresh_token_reused",
        old,
        True,
    )
    assert first.since.tzinfo is not None
    assert first.gate_value() == f"{old} refresh_token_reused {first.since_text}"
    # The same login judged again (a redelivery): the first reason and time stand, no new event.
    again = store.quarantine(
        "codex_auth_1", host="h", shard=1, reason="401 unauthorized", auth_digest=old
    )
    assert (again.reason, again.since_text) == ("refresh_token_reused", first.since_text)
    recorded = store.shard_health("codex_auth_1")
    assert recorded is not None and recorded.quarantined and recorded.run_id == "run-1"
    assert store.shard_health("codex_auth_2") is None  # other shards are untouched
    # The same login is no lift; a lift names the quarantine it ends (a newer one stands).
    assert not store.lift_quarantine("codex_auth_1", quarantined_digest=old, auth_digest=old)
    assert not store.lift_quarantine("codex_auth_1", quarantined_digest="c" * 64, auth_digest=new)
    assert store.lift_quarantine(
        "codex_auth_1", quarantined_digest=old, auth_digest=new, run_id="run-2", phase="tasks"
    )
    healthy = store.shard_health("codex_auth_1")
    assert healthy is not None and (healthy.status, healthy.auth_digest) == ("healthy", new)
    assert healthy.gate_value() is None
    assert not store.lift_quarantine("codex_auth_1", quarantined_digest=old, auth_digest=new)
    events = store.shard_health_events("codex_auth_1")
    assert [(e.event, e.reason, e.auth_digest, e.run_id) for e in events] == [
        ("quarantined", "refresh_token_reused", old, "run-1"),
        ("lifted", "refresh_token_reused", new, "run-2"),
    ]
    # The new login rejected in turn: quarantined again, with its own digest.
    later = store.quarantine(
        "codex_auth_1", host="h", shard=1, reason="401 unauthorized", auth_digest=new
    )
    assert (later.status, later.reason, later.auth_digest) == (
        "quarantined",
        "401 unauthorized",
        new,
    )
    assert len(store.shard_health_events("codex_auth_1")) == 3


def register(store: RunStore, volume: str, shard: int, fingerprint: str, **kw: str) -> Any:
    return store.register_login(
        volume,
        host=kw.get("host", f"host-{shard}"),
        shard=shard,
        fingerprint=fingerprint,
        key_id=kw.get("key_id", "k" * 16),
        auth_digest=kw.get("auth_digest", f"{shard}" * 64),
    )


def test_a_copied_login_is_fenced_on_the_later_volume_until_it_changes_or_is_resolved(
    store: RunStore,
) -> None:
    same, own = "f" * 64, "e" * 64
    assert store.login_fence("vol_a") is None and store.login_fences() == []
    first = register(store, "vol_a", 0, same, host="host-x")
    assert (first.status, first.shared) == ("clear", False)
    # Another shard on another host presents the same login: reported on both, later one fenced.
    copy = register(store, "vol_b", 1, same, host="host-y")
    assert (copy.status, copy.owner.volume, copy.owner.host) == ("fenced", "vol_a", "host-x")
    assert copy.holder.auth_digest == "1" * 64
    again = register(store, "vol_a", 0, same, host="host-x")  # the first one presents it again
    assert again.status == "clear" and [h.volume for h in again.others] == ["vol_b"]
    assert store.unavailable_shards() == {1}
    fenced = store.login_fence("vol_b")
    assert fenced is not None and fenced.fenced
    assert [(v.volume, v.status) for v in store.login_fences()] == [
        ("vol_a", "clear"),
        ("vol_b", "fenced"),
    ]
    # The same fingerprint under another fleet key is not comparable: not a copy.
    other_key = register(store, "vol_c", 2, same, key_id="j" * 16)
    assert other_key.status == "clear"
    # The operator decides vol_b keeps it: vol_a is now the fenced one.
    resolved = store.resolve_login_fence("vol_b")
    assert resolved is not None and resolved.status == "clear"
    assert store.login_fence("vol_a").fenced  # type: ignore[union-attr]
    assert store.unavailable_shards() == {0}
    assert store.resolve_login_fence("vol_none") is None
    # vol_a signed in with a login of its own: its latest login is clear, nothing is fenced.
    time.sleep(0.01)
    mine = register(store, "vol_a", 0, own, host="host-x")
    assert mine.status == "clear"
    assert store.login_fence("vol_a").status == "clear"  # type: ignore[union-attr]
    assert store.unavailable_shards() == set()


def test_quarantined_shards_are_unavailable_for_new_runs(store: RunStore) -> None:
    store.quarantine("vol_q", host="h", shard=2, reason="401 unauthorized", auth_digest="a" * 64)
    assert store.unavailable_shards() == {2}
    store.lift_quarantine("vol_q", quarantined_digest="a" * 64, auth_digest="b" * 64)
    assert store.unavailable_shards() == set()


def test_a_store_at_revision_0002_is_upgraded_with_the_fence_table(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    migrate(engine, "0002")
    assert "login_fingerprints" not in inspect(engine).get_table_names()
    upgraded = RunStore.open(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    assert "login_fingerprints" in inspect(upgraded.engine).get_table_names()
    assert register(upgraded, "vol_a", 0, "f" * 64).status == "clear"


def test_the_keepalive_scheduler_reads_the_fence_and_quarantine_of_its_shard(
    store: RunStore,
) -> None:
    shard = Shard(1, "codex-1", "vol_b", "host-y")
    assert store.shard_activity(shard) == ShardActivity()  # nothing recorded: idle, clear
    register(store, "vol_a", 0, "f" * 64, host="host-x")
    register(store, "vol_b", 1, "f" * 64, host="host-y", auth_digest="b" * 64)
    activity = store.shard_activity(shard)
    assert (activity.fenced_auth_digest, activity.quarantined) == ("b" * 64, False)
    owner = store.shard_activity(Shard(0, "codex-0", "vol_a", "host-x"))
    assert owner.fenced_auth_digest is None
    store.quarantine("vol_b", host="host-y", shard=1, reason="401", auth_digest="b" * 64)
    assert store.shard_activity(shard).quarantined
