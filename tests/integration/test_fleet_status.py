"""`moonmind-codex status` and `metrics` as a subprocess, on a real SQLite file and PostgreSQL.

The records are made through RunStore as the workers make them (a quarantine, a copied login,
runs and a keep-alive); the CLI reads them back from another process.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import make_url, text

from harness.postgres import running_postgres
from moonmind_codex.store.engine import make_engine
from moonmind_codex.store.runstore import RunStore

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
REJECTED = "a" * 64  # the quarantined login's digest: never shown
FINGERPRINT = "f" * 64  # never shown either


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with running_postgres() as url:
        yield url


def _new_database(base: str, name: str) -> str:
    admin = make_engine(base)
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(base).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a database with no schema yet."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'runs.sqlite3'}"
    name = f"fs_{abs(hash(request.node.nodeid)) % 10**12}"
    return _new_database(request.getfixturevalue("postgres_url"), name)


def cli(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    """The real command, from this checkout, with only the settings the test gives."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOONMIND_CODEX_")}
    env.update(
        MOONMIND_CODEX_ENV_FILE="",
        MOONMIND_CODEX_DATABASE_URL=url,
        MOONMIND_CODEX_SHARD_COUNT="3",
        PYTHONPATH=str(REPO),
    )
    return subprocess.run(
        [sys.executable, "-m", "moonmind_codex", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env=env,
        cwd=REPO,
    )


def record_fleet(store: RunStore) -> None:
    """Shard 0 busy with a copied login's original, 1 quarantined, 2 holding the copy."""
    store.ensure_run("r-done", status="pending", queue="codex-1", created_at=T0)
    store.run_started_on("r-done", queue="codex-1", shard=1, volume="codex_auth_1", host="wb")
    store.update_run("r-done", status="failed", started_at=T0, finished_at=T0 + HOUR)
    store.ensure_run("r-busy", status="pending", queue="codex-0", created_at=T0 + HOUR)
    store.run_started_on("r-busy", queue="codex-0", shard=0, volume="codex_auth_0", host="wa")
    store.update_run("r-busy", started_at=T0 + 2 * HOUR)
    store.ensure_run("r-queued", status="pending", queue="codex-0", created_at=T0 + 3 * HOUR)
    keepalive = "keepalive-0-20261127T070000Z"
    store.ensure_run(keepalive, status="pending", queue="codex-0", created_at=T0 - HOUR)
    store.run_started_on(keepalive, queue="codex-0", shard=0, volume="codex_auth_0", host="wa")
    store.update_run(keepalive, status="succeeded", finished_at=T0 - HOUR / 2)
    store.quarantine(
        "codex_auth_1", host="wb", shard=1, reason="refresh_token_reused", auth_digest=REJECTED
    )
    for volume, shard, host in (("codex_auth_0", 0, "wa"), ("codex_auth_2", 2, "wc")):
        store.register_login(
            volume, host=host, shard=shard, fingerprint=FINGERPRINT, key_id="k1",
            auth_digest="b" * 64,
        )  # fmt: skip


@pytest.fixture
def fleet(database: str) -> Iterator[tuple[str, RunStore]]:
    store = RunStore.open(database)
    record_fleet(store)
    yield database, store
    store.engine.dispose()


def assert_nothing_secret(output: str) -> None:
    for secret in (REJECTED, FINGERPRINT, "b" * 64, "k1"):
        assert secret not in output


def test_status_shows_each_shard_and_exits_2_while_one_is_unavailable(
    fleet: tuple[str, RunStore],
) -> None:
    url, store = fleet
    since = store.shard_health("codex_auth_1").since_text  # type: ignore[union-attr]
    done = cli("status", url=url)
    assert done.returncode == 2, done.stderr
    assert done.stdout.splitlines() == [
        "shard  queue    volume        host  health       last keep-alive                 "
        "last run                             in flight",
        "0      codex-0  codex_auth_0  wa    ok           succeeded 2026-11-27T07:30:00Z  "
        "r-busy running 2026-11-27T10:00:00Z  2",
        "1      codex-1  codex_auth_1  wb    quarantined  -                               "
        "r-done failed 2026-11-27T09:00:00Z   0",
        "2      codex-2  codex_auth_2  wc    fenced       -                               -"
        "                                    0",
        f"shard 1: quarantined since {since} (refresh_token_reused): the server rejected its "
        "login; sign volume codex_auth_1 in again: moonmind-codex login --shard 1",
        "shard 2: fenced: its login is a copy of the one shard 0 (volume codex_auth_0 on host "
        "wa) keeps; sign it in with a login of its own: moonmind-codex login --shard 2",
        "runs: pending 1, running 1, succeeded 0, failed 1, blocked 0, cancelled 0",
        "keep-alive runs: pending 0, running 0, succeeded 1, failed 0, blocked 0, cancelled 0",
    ]
    assert_nothing_secret(done.stdout + done.stderr)

    as_json = cli("status", "--json", url=url)
    assert as_json.returncode == 2, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["available"] is False
    assert [(s["shard"], s["health"], s["available"]) for s in data["shards"]] == [
        (0, "ok", True),
        (1, "quarantined", False),
        (2, "fenced", False),
    ]
    assert data["shards"][1]["quarantine"] == {"reason": "refresh_token_reused", "since": since}
    assert data["shards"][2]["fence"] == {
        "kept_by": {"shard": 0, "volume": "codex_auth_0", "host": "wa"}
    }
    assert data["shards"][0]["last_keepalive"] == {
        "run_id": "keepalive-0-20261127T070000Z",
        "status": "succeeded",
        "at": "2026-11-27T07:30:00Z",
    }
    assert [s["runs_in_flight"] for s in data["shards"]] == [2, 0, 0]
    assert data["runs"]["failed"] == 1 and data["keepalive_runs"]["succeeded"] == 1
    assert_nothing_secret(as_json.stdout)


def test_status_exits_0_once_every_shard_has_a_login_of_its_own(
    fleet: tuple[str, RunStore],
) -> None:
    url, store = fleet
    # Shard 1 signed in again (a new login lifts its quarantine), shard 2 with its own login.
    assert store.lift_quarantine("codex_auth_1", quarantined_digest=REJECTED, auth_digest="c" * 64)
    verdict = store.register_login(
        "codex_auth_2", host="wc", shard=2, fingerprint="e" * 64, key_id="k1",
        auth_digest="d" * 64,
    )  # fmt: skip
    assert not verdict.fenced
    done = cli("status", "--json", url=url)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["available"] is True
    assert [s["health"] for s in data["shards"]] == ["ok", "ok", "ok"]
    assert [s["problem"] for s in data["shards"]] == [None, None, None]
    table = cli("status", url=url)
    assert table.returncode == 0 and "quarantined" not in table.stdout


def samples(exposition: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    return {
        family.name: [(s.labels, s.value) for s in family.samples]
        for family in text_string_to_metric_families(exposition)
    }


def test_metrics_print_and_write_the_textfile(fleet: tuple[str, RunStore], tmp_path: Path) -> None:
    url, store = fleet
    since = store.shard_health("codex_auth_1").since  # type: ignore[union-attr]
    done = cli("metrics", url=url)
    assert done.returncode == 0, done.stderr
    assert_nothing_secret(done.stdout)
    found = samples(done.stdout)

    def shard(n: int, **extra: str) -> dict[str, str]:
        return {"shard": str(n), "queue": f"codex-{n}", "volume": f"codex_auth_{n}", **extra}

    assert found["moonmind_codex_shard_available"] == [
        (shard(0), 1.0),
        (shard(1), 0.0),
        (shard(2), 0.0),
    ]
    assert found["moonmind_codex_shard_quarantined"] == [
        (shard(0, reason=""), 0.0),
        (shard(1, reason="refresh_token_reused"), 1.0),
        (shard(2, reason=""), 0.0),
    ]
    assert found["moonmind_codex_shard_quarantined_since_timestamp_seconds"] == [
        (shard(1), pytest.approx(since.timestamp(), abs=1e-3))
    ]
    assert found["moonmind_codex_shard_fenced"] == [
        (shard(0), 0.0),
        (shard(1), 0.0),
        (shard(2), 1.0),
    ]
    assert found["moonmind_codex_shard_last_keepalive_timestamp_seconds"] == [
        (shard(0), (T0 - HOUR / 2).timestamp())
    ]
    assert found["moonmind_codex_shard_last_keepalive_succeeded"] == [(shard(0), 1.0)]
    assert found["moonmind_codex_shard_last_run_timestamp_seconds"] == [
        (shard(0), (T0 + 2 * HOUR).timestamp()),
        (shard(1), (T0 + HOUR).timestamp()),
    ]
    assert found["moonmind_codex_shard_runs_in_flight"] == [
        (shard(0), 2.0),
        (shard(1), 0.0),
        (shard(2), 0.0),
    ]
    runs = {labels["status"]: value for labels, value in found["moonmind_codex_runs"]}
    assert runs == {
        "pending": 1.0, "running": 1.0, "succeeded": 0.0, "failed": 1.0, "blocked": 0.0,
        "cancelled": 0.0,
    }  # fmt: skip

    target = tmp_path / "textfile" / "moonmind_codex.prom"
    target.parent.mkdir()
    written = cli("metrics", "--textfile", str(target), url=url)
    assert written.returncode == 0, written.stderr
    assert written.stdout == ""
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert samples(target.read_text(encoding="utf-8")) == found
    assert [p.name for p in target.parent.iterdir()] == ["moonmind_codex.prom"]

    unwritable = cli("metrics", "--textfile", str(tmp_path / "none" / "m.prom"), url=url)
    assert unwritable.returncode == 1
    assert "cannot write" in unwritable.stderr and "Traceback" not in unwritable.stderr


def unavailable(done: subprocess.CompletedProcess[str], *why: str) -> None:
    assert done.returncode == 69, (done.stdout, done.stderr)
    assert done.stdout == ""
    assert "check MOONMIND_CODEX_DATABASE_URL" in done.stderr
    assert "Traceback" not in done.stderr
    for part in why:
        assert part in done.stderr


def test_a_store_that_cannot_be_read_is_named_without_its_password(
    database: str, tmp_path: Path
) -> None:
    if database.startswith("sqlite"):
        missing = f"sqlite:///{tmp_path / 'no' / 'such.sqlite3'}"
        unavailable(cli("status", url=missing), "no run store at", "does not exist")
        assert not (tmp_path / "no").exists()  # a reader creates nothing
        empty = tmp_path / "empty.sqlite3"
        empty.touch()
        unavailable(cli("metrics", url=f"sqlite:///{empty}"), "alembic_version")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.sqlite3"]  # no lock file
        return
    with_password = make_url(database).set(password="s3cret-pw")
    wrong = with_password.set(database="no_such_database").render_as_string(hide_password=False)
    done = cli("status", url=wrong)
    unavailable(done, "no_such_database", "postgres:***@")
    assert "s3cret-pw" not in done.stderr
    # A database without the schema (no worker ever started on it) is not an empty fleet.
    unmigrated = with_password.render_as_string(hide_password=False)
    done = cli("metrics", url=unmigrated)
    unavailable(done, "alembic_version")
    assert "s3cret-pw" not in done.stderr


def test_a_store_behind_this_version_asks_for_db_upgrade(fleet: tuple[str, RunStore]) -> None:
    url, store = fleet
    with store.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0002'"))
    done = cli("status", url=url)
    unavailable(done, "schema revision 0002", "moonmind-codex db upgrade")


def test_login_fence_status_and_resolve_name_each_holder_one_way(
    fleet: tuple[str, RunStore], tmp_path: Path
) -> None:
    """`login-fence status` lists each registered login and who shares it (exit 2 while one is
    fenced), says why fencing is off without a key, and `resolve` hands the login to a shard."""
    url, _ = fleet
    done = cli("login-fence", "status", url=url)
    assert done.returncode == 2, done.stderr
    assert done.stdout.splitlines() == [
        "WARNING: MOONMIND_CODEX_FINGERPRINT_KEY_FILE is not set: copied logins are not fenced "
        "(see docs/runbook.md)",
        "shard 0  codex_auth_0  wa  clear  same login as shard 2 (volume codex_auth_2 on host wc)",
        "shard 2  codex_auth_2  wc  fenced  same login as shard 0 (volume codex_auth_0 on host wa)",
    ]
    as_json = cli("login-fence", "status", "--json", url=url)
    assert as_json.returncode == 2, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["fencing"] is False
    assert data["logins"][1] == {
        "shard": 2,
        "volume": "codex_auth_2",
        "host": "wc",
        "status": "fenced",
        "shared_with": [{"shard": 0, "volume": "codex_auth_0", "host": "wa"}],
    }
    assert_nothing_secret(done.stdout + as_json.stdout)

    resolved = cli("login-fence", "resolve", "--shard", "2", url=url)
    assert resolved.returncode == 0, resolved.stderr
    assert resolved.stdout.strip() == (
        "shard 2 (volume codex_auth_2) keeps its login; fenced now: shard 0 (volume "
        "codex_auth_0 on host wa) (sign each in with its own login)"
    )
    after = json.loads(cli("login-fence", "status", "--json", url=url).stdout)
    assert [(r["shard"], r["status"]) for r in after["logins"]] == [(0, "fenced"), (2, "clear")]
