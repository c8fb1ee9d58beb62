"""The run store on both databases it supports: SQLite (WAL) and a real PostgreSQL cluster."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from harness.postgres import running_postgres
from moonmind_codex.runstore import RunStore, make_engine, migrate


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with running_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunStore]:
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
        url = base.rsplit("/", 1)[0] + "/" + name
    opened = RunStore.open(url)
    yield opened
    opened.engine.dispose()


def test_migrations_create_the_schema_and_run_again_as_a_no_op(store: RunStore) -> None:
    tables = set(inspect(store.engine).get_table_names())
    assert {"spec_workflow_runs", "spec_workflow_task_states", "run_queue_assignments"} <= tables
    assert "alembic_version" in tables
    migrate(store.engine)  # a second start-up: nothing to do, nothing breaks
    with store.engine.connect() as connection:
        assert (
            connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0001"
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
