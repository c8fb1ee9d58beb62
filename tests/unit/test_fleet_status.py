"""The fleet's status (pure): rows, table, JSON and metric families from the store's records."""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from moonmind_codex.cli.app import build_parser
from moonmind_codex.cli.metrics import exposition, write_textfile
from moonmind_codex.core import fence
from moonmind_codex.core.fleet_status import (
    FleetStatus,
    MetricFamily,
    RunView,
    Sample,
    ShardStatus,
    fleet_status,
    is_keepalive,
    metric_families,
    problem,
    render_table,
    table_rows,
    to_json,
    when_text,
)
from moonmind_codex.core.shard import Shard

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
SHARDS = [Shard(n, f"codex-{n}", f"codex_auth_{n}", "cli-host") for n in range(3)]


@dataclass(frozen=True)
class Health:
    volume: str
    host: str | None
    status: str
    reason: str | None
    since: datetime


def holder(volume: str, shard: int, host: str, order: int) -> fence.Holder:
    return fence.Holder(volume=volume, host=host, shard=shard, order=order)


def copied_login() -> list[fence.FenceVerdict]:
    """Shard 0 registered a login first; shard 2's volume holds a copy of it."""
    holders = [holder("codex_auth_0", 0, "worker-a", 1), holder("codex_auth_2", 2, "worker-c", 2)]
    return [fence.judge("codex_auth_0", holders), fence.judge("codex_auth_2", holders)]


def run(run_id: str, status: str, shard: int | None, **fields: object) -> RunView:
    queue = fields.pop("queue", None if shard is None else f"codex-{shard}")
    return RunView(
        run_id=run_id,
        status=status,
        queue=queue,  # type: ignore[arg-type]
        shard=shard,
        host=fields.pop("host", None),  # type: ignore[arg-type]
        created_at=fields.pop("created_at", NOW - 3 * HOUR),  # type: ignore[arg-type]
        **fields,  # type: ignore[arg-type]
    )


def mixed_fleet() -> FleetStatus:
    """Shard 0 ok and busy, shard 1 quarantined, shard 2 fenced."""
    return fleet_status(
        SHARDS,
        healths=[
            Health("codex_auth_0", "worker-a", "healthy", None, NOW - 9 * HOUR),
            Health("codex_auth_1", "worker-b", "quarantined", "refresh_token_reused", NOW - HOUR),
            Health("codex_auth_9", "gone", "quarantined", "refresh_token_expired", NOW),
        ],
        fences=copied_login(),
        latest_runs={
            0: run("r-7", "running", 0, host="worker-a", started_at=NOW - 2 * HOUR),
            1: run("r-5", "blocked", 1, finished_at=NOW - HOUR),
        },
        latest_keepalives={
            0: run(
                "keepalive-0-20261127T060000Z",
                "succeeded",
                0,
                created_at=NOW - 6 * HOUR,
                finished_at=NOW - 5 * HOUR,
            ),
            2: run("keepalive-2-20261127T110000Z", "pending", None, queue="codex-2"),
        },
        open_runs=[
            run("r-7", "running", 0),
            run("r-8", "pending", None, queue="codex-0"),  # not on its shard yet
            run("r-9", "pending", None, queue="celery"),  # no shard's queue: nowhere
            run("keepalive-2-20261127T110000Z", "pending", None, queue="codex-2"),
        ],
        counts={
            ("running", False): 1,
            ("pending", False): 2,
            ("blocked", False): 4,
            ("succeeded", True): 3,
            ("pending", True): 1,
            ("lost", False): 1,  # a status this version does not know is still counted
        },
    )


TABLE = """\
shard  queue    volume        host      health       last keep-alive                 last run                          in flight
0      codex-0  codex_auth_0  worker-a  ok           succeeded 2026-11-27T07:00:00Z  r-7 running 2026-11-27T10:00:00Z  2
1      codex-1  codex_auth_1  worker-b  quarantined  -                               r-5 blocked 2026-11-27T11:00:00Z  0
2      codex-2  codex_auth_2  worker-c  fenced       pending 2026-11-27T09:00:00Z    -                                 0
shard 1: quarantined since 2026-11-27T11:00:00Z (refresh_token_reused): the server rejected its login; sign volume codex_auth_1 in again: moonmind-codex login --shard 1
shard 2: fenced: its login is a copy of the one shard 0 (volume codex_auth_0 on host worker-a) keeps; sign it in with a login of its own: moonmind-codex login --shard 2
runs: pending 2, running 1, succeeded 0, failed 0, blocked 4, cancelled 0, lost 1
keep-alive runs: pending 1, running 0, succeeded 3, failed 0, blocked 0, cancelled 0"""  # noqa: E501


def test_the_table_has_a_row_per_shard_what_to_do_and_the_totals() -> None:
    assert render_table(mixed_fleet()) == TABLE


def test_the_json_says_the_same_with_nothing_secret() -> None:
    data = to_json(mixed_fleet())
    assert data == {
        "available": False,
        "runs": {
            "pending": 2, "running": 1, "succeeded": 0, "failed": 0, "blocked": 4,
            "cancelled": 0, "lost": 1,
        },
        "keepalive_runs": {
            "pending": 1, "running": 0, "succeeded": 3, "failed": 0, "blocked": 0, "cancelled": 0,
        },
        "shards": [
            {
                "shard": 0, "queue": "codex-0", "volume": "codex_auth_0", "host": "worker-a",
                "health": "ok", "available": True, "quarantine": None, "fence": None,
                "problem": None,
                "last_keepalive": {
                    "run_id": "keepalive-0-20261127T060000Z", "status": "succeeded",
                    "at": "2026-11-27T07:00:00Z",
                },
                "last_run": {"run_id": "r-7", "status": "running", "at": "2026-11-27T10:00:00Z"},
                "runs_in_flight": 2,
            },
            {
                "shard": 1, "queue": "codex-1", "volume": "codex_auth_1", "host": "worker-b",
                "health": "quarantined", "available": False,
                "quarantine": {"reason": "refresh_token_reused", "since": "2026-11-27T11:00:00Z"},
                "fence": None,
                "problem": TABLE.splitlines()[4].removeprefix("shard 1: "),
                "last_keepalive": None,
                "last_run": {"run_id": "r-5", "status": "blocked", "at": "2026-11-27T11:00:00Z"},
                "runs_in_flight": 0,
            },
            {
                "shard": 2, "queue": "codex-2", "volume": "codex_auth_2", "host": "worker-c",
                "health": "fenced", "available": False, "quarantine": None,
                "fence": {"kept_by": {"shard": 0, "volume": "codex_auth_0", "host": "worker-a"}},
                "problem": TABLE.splitlines()[5].removeprefix("shard 2: "),
                "last_keepalive": {
                    "run_id": "keepalive-2-20261127T110000Z", "status": "pending",
                    "at": "2026-11-27T09:00:00Z",
                },
                "last_run": None,
                "runs_in_flight": 0,
            },
        ],
    }  # fmt: skip


def shard_labels(n: int) -> tuple[tuple[str, str], ...]:
    return (("shard", str(n)), ("queue", f"codex-{n}"), ("volume", f"codex_auth_{n}"))


def samples(*values: float) -> tuple[Sample, ...]:
    """One sample per shard, from shard 0 on."""
    return tuple(Sample(shard_labels(shard), value) for shard, value in enumerate(values))


SHARD = ("shard", "queue", "volume")


def test_the_metric_families_as_data() -> None:
    families = metric_families(mixed_fleet())
    assert families == [
        MetricFamily(
            "moonmind_codex_shard_available",
            "1 when the shard takes runs: neither quarantined nor fenced",
            SHARD,
            samples(1.0, 0.0, 0.0),
        ),
        MetricFamily(
            "moonmind_codex_shard_quarantined",
            "1 when the server rejected the shard's login (reason: why); sign it in again",
            (*SHARD, "reason"),
            (
                Sample((*shard_labels(0), ("reason", "")), 0.0),
                Sample((*shard_labels(1), ("reason", "refresh_token_reused")), 1.0),
                Sample((*shard_labels(2), ("reason", "")), 0.0),
            ),
        ),
        MetricFamily(
            "moonmind_codex_shard_quarantined_since_timestamp_seconds",
            "when the shard's current quarantine began (Unix time)",
            SHARD,
            (Sample(shard_labels(1), (NOW - HOUR).timestamp()),),
        ),
        MetricFamily(
            "moonmind_codex_shard_fenced",
            "1 when the shard's volume holds a copy of a login another shard keeps",
            SHARD,
            samples(0.0, 0.0, 1.0),
        ),
        MetricFamily(
            "moonmind_codex_shard_last_keepalive_timestamp_seconds",
            "when the shard's latest keep-alive run last changed (Unix time)",
            SHARD,
            (
                Sample(shard_labels(0), (NOW - 5 * HOUR).timestamp()),
                Sample(shard_labels(2), (NOW - 3 * HOUR).timestamp()),
            ),
        ),
        MetricFamily(
            "moonmind_codex_shard_last_keepalive_succeeded",
            "1 when the shard's latest finished keep-alive succeeded, 0 when it did not",
            SHARD,
            (Sample(shard_labels(0), 1.0),),  # shard 2's is still pending: no sample
        ),
        MetricFamily(
            "moonmind_codex_shard_last_run_timestamp_seconds",
            "when the latest run on the shard (not a keep-alive) last changed (Unix time)",
            SHARD,
            (
                Sample(shard_labels(0), (NOW - 2 * HOUR).timestamp()),
                Sample(shard_labels(1), (NOW - HOUR).timestamp()),
            ),
        ),
        MetricFamily(
            "moonmind_codex_shard_runs_in_flight",
            "runs pending or running on the shard (keep-alives left out)",
            SHARD,
            samples(2.0, 0.0, 0.0),
        ),
        MetricFamily(
            "moonmind_codex_runs",
            "runs in the run store by status (keep-alives left out)",
            ("status",),
            tuple(
                Sample((("status", s),), v)
                for s, v in [
                    ("pending", 2.0),
                    ("running", 1.0),
                    ("succeeded", 0.0),
                    ("failed", 0.0),
                    ("blocked", 4.0),
                    ("cancelled", 0.0),
                    ("lost", 1.0),
                ]
            ),
        ),
        MetricFamily(
            "moonmind_codex_keepalive_runs",
            "keep-alive runs in the run store by status",
            ("status",),
            tuple(
                Sample((("status", s),), v)
                for s, v in [
                    ("pending", 1.0),
                    ("running", 0.0),
                    ("succeeded", 3.0),
                    ("failed", 0.0),
                    ("blocked", 0.0),
                    ("cancelled", 0.0),
                ]
            ),
        ),
    ]


def test_a_failed_keepalive_reads_zero_and_an_empty_store_gives_zeros() -> None:
    status = fleet_status(
        SHARDS[:1],
        latest_keepalives={0: run("keepalive-0-x", "failed", 0, finished_at=NOW)},
    )
    by_name = {f.name: f.samples for f in metric_families(status)}
    assert by_name["moonmind_codex_shard_last_keepalive_succeeded"] == samples(0.0)
    assert by_name["moonmind_codex_shard_last_keepalive_timestamp_seconds"] == samples(
        NOW.timestamp()
    )
    assert by_name["moonmind_codex_runs"] == tuple(
        Sample((("status", s),), 0.0)
        for s in ("pending", "running", "succeeded", "failed", "blocked", "cancelled")
    )
    assert by_name["moonmind_codex_shard_last_run_timestamp_seconds"] == ()
    assert by_name["moonmind_codex_shard_quarantined_since_timestamp_seconds"] == ()


def test_a_fleet_of_available_shards_is_available() -> None:
    status = fleet_status(
        SHARDS,
        healths=[Health("codex_auth_1", "worker-b", "healthy", None, NOW)],
        # Shard 0 shares its login with shard 2 but keeps it: shard 0 is not fenced.
        fences=copied_login()[:1],
    )
    assert [(r.health, r.available) for r in status.shards] == [("ok", True)] * 3
    assert status.available
    assert [problem(r) for r in status.shards] == [None] * 3
    assert render_table(status).splitlines()[1:4] == [
        "0      codex-0  codex_auth_0  worker-a  ok      -                -         0",
        "1      codex-1  codex_auth_1  worker-b  ok      -                -         0",
        "2      codex-2  codex_auth_2  -         ok      -                -         0",
    ]
    assert to_json(status)["available"] is True


def test_one_unavailable_shard_makes_the_fleet_unavailable() -> None:
    status = fleet_status(SHARDS, fences=copied_login())
    assert [r.available for r in status.shards] == [True, True, False]
    assert not status.available


def test_quarantined_and_fenced_at_once_reads_quarantined_and_names_both() -> None:
    status = fleet_status(
        SHARDS,
        healths=[Health("codex_auth_2", None, "quarantined", None, NOW)],
        fences=copied_login(),
    )
    row = status.shards[2]
    assert (row.health, row.quarantined, row.fenced, row.available) == (
        "quarantined",
        True,
        True,
        False,
    )
    assert row.quarantine_reason == "rejected"  # none recorded
    assert problem(row) == (
        "quarantined since 2026-11-27T12:00:00Z (rejected): the server rejected its login; "
        "sign volume codex_auth_2 in again: moonmind-codex login --shard 2; fenced: its login "
        "is a copy of the one shard 0 (volume codex_auth_0 on host worker-a) keeps; sign it in "
        "with a login of its own: moonmind-codex login --shard 2"
    )
    assert metric_families(status)[1].samples[2] == Sample(
        (*shard_labels(2), ("reason", "rejected")), 1.0
    )


def test_a_keeper_of_unknown_shard_and_host_is_named_as_unknown() -> None:
    holders = [
        fence.Holder(volume="elsewhere", host=None, shard=None, order=1),
        holder("codex_auth_1", 1, "worker-b", 2),
    ]
    status = fleet_status(SHARDS, fences=[fence.judge("codex_auth_1", holders)])
    assert problem(status.shards[1]) == (
        "fenced: its login is a copy of the one shard ? (volume elsewhere on host unknown) "
        "keeps; sign it in with a login of its own: moonmind-codex login --shard 1"
    )


def test_the_host_is_the_first_one_recorded() -> None:
    def host_of(**records: object) -> str | None:
        return fleet_status(SHARDS[2:], **records).shards[0].host  # type: ignore[arg-type]

    fenced = copied_login()
    ran = {2: run("r-1", "succeeded", 2, host="from-run")}
    alive = {2: run("keepalive-2-x", "succeeded", 2, host="from-keepalive")}
    healthy = [Health("codex_auth_2", "from-health", "healthy", None, NOW)]
    assert host_of() is None
    assert host_of(latest_keepalives=alive) == "from-keepalive"
    assert host_of(latest_runs=ran, latest_keepalives=alive) == "from-run"
    assert host_of(fences=fenced, latest_runs=ran) == "worker-c"
    assert host_of(healths=healthy, fences=fenced, latest_runs=ran) == "from-health"
    blank = [Health("codex_auth_2", "", "healthy", None, NOW)]
    assert host_of(healths=blank, latest_runs=ran) == "from-run"


def test_runs_in_flight_count_by_shard_then_by_a_queue_only_one_shard_has() -> None:
    open_runs = [
        run("a", "running", 1),
        run("b", "running", 1, queue="codex-0"),  # its recorded shard wins over its queue
        run("c", "pending", None, queue="codex-2"),
        run("d", "pending", None, queue=None),
        run("keepalive-1-x", "running", 1),
    ]
    sharded = fleet_status(SHARDS, open_runs=open_runs)
    assert [r.in_flight for r in sharded.shards] == [0, 2, 1]
    # The single-queue mode: one queue feeds every shard, so a run not yet on a shard is on none.
    single = [Shard(n, "codex", f"codex_auth_{n}", "h") for n in range(3)]
    pending = [run("c", "pending", None, queue="codex"), run("a", "running", 1, queue="codex")]
    assert [r.in_flight for r in fleet_status(single, open_runs=pending).shards] == [0, 1, 0]


def test_run_totals_split_keepalives_and_keep_unknown_statuses_last() -> None:
    status = fleet_status(
        SHARDS,
        counts={("zz", False): 2, ("failed", False): 5, ("aa", True): 1, ("failed", True): 7},
    )
    assert list(status.runs.items()) == [
        ("pending", 0), ("running", 0), ("succeeded", 0), ("failed", 5), ("blocked", 0),
        ("cancelled", 0), ("zz", 2),
    ]  # fmt: skip
    assert list(status.keepalive_runs.items()) == [
        ("pending", 0), ("running", 0), ("succeeded", 0), ("failed", 7), ("blocked", 0),
        ("cancelled", 0), ("aa", 1),
    ]  # fmt: skip


def test_a_run_is_dated_by_its_latest_recorded_moment() -> None:
    created = run("r", "pending", 0, created_at=NOW)
    assert created.when == NOW
    assert run("r", "running", 0, created_at=NOW, started_at=NOW + HOUR).when == NOW + HOUR
    finished = run(
        "r", "failed", 0, created_at=NOW, started_at=NOW + HOUR, finished_at=NOW + 2 * HOUR
    )
    assert finished.when == NOW + 2 * HOUR
    assert finished.to_dict() == {"run_id": "r", "status": "failed", "at": "2026-11-27T14:00:00Z"}


def test_times_are_shown_in_utc_whatever_the_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        assert when_text(NOW) == "2026-11-27T12:00:00Z"
    finally:
        monkeypatch.undo()
        time.tzset()
    assert when_text(None) == "-"
    assert when_text(datetime(2026, 1, 2, 5, 4, 3, tzinfo=timezone(timedelta(hours=2)))) == (
        "2026-01-02T03:04:03Z"
    )


@pytest.mark.parametrize(
    ("run_id", "expected"),
    [
        ("keepalive-0-20261127T120000Z", True),
        ("keepalive-12-x", True),
        ("r-keepalive-0-x", False),
        ("Keepalive-0-x", False),
        ("keepalive", False),
    ],
)
def test_keepalive_runs_are_known_by_their_id(run_id: str, expected: bool) -> None:
    assert is_keepalive(run_id) is expected


def test_the_header_and_rows_are_cells_in_column_order() -> None:
    rows = table_rows(fleet_status(SHARDS[:1], open_runs=[run("a", "running", 0)]))
    assert rows == [
        ("shard", "queue", "volume", "host", "health", "last keep-alive", "last run", "in flight"),
        ("0", "codex-0", "codex_auth_0", "-", "ok", "-", "-", "1"),
    ]


def test_a_shard_status_made_by_hand_is_ok() -> None:
    row = ShardStatus(shard=4, queue="q", volume="v", host=None)
    assert (row.health, row.available, row.quarantined, row.fenced, row.in_flight) == (
        "ok",
        True,
        False,
        False,
        0,
    )
    assert row.labels() == (("shard", "4"), ("queue", "q"), ("volume", "v"))


def test_the_exposition_parses_back_to_the_same_samples() -> None:
    text = exposition(metric_families(mixed_fleet()))
    parsed = {f.name: f for f in text_string_to_metric_families(text)}
    assert {f.type for f in parsed.values()} == {"gauge"}
    quarantined = parsed["moonmind_codex_shard_quarantined"].samples
    assert [(s.labels, s.value) for s in quarantined] == [
        ({"shard": "0", "queue": "codex-0", "volume": "codex_auth_0", "reason": ""}, 0.0),
        (
            {
                "shard": "1",
                "queue": "codex-1",
                "volume": "codex_auth_1",
                "reason": "refresh_token_reused",
            },
            1.0,
        ),
        ({"shard": "2", "queue": "codex-2", "volume": "codex_auth_2", "reason": ""}, 0.0),
    ]
    runs = parsed["moonmind_codex_runs"].samples
    assert {s.labels["status"]: s.value for s in runs}["blocked"] == 4.0
    # Only this fleet's families: no process or platform metrics of the CLI itself.
    assert all(name.startswith("moonmind_codex_") for name in parsed)


def test_the_textfile_is_replaced_whole_with_mode_0644(tmp_path: Path) -> None:
    target = tmp_path / "moonmind_codex.prom"
    target.write_text("old\n", encoding="utf-8")
    os.chmod(target, 0o600)
    old_umask = os.umask(0o077)
    try:
        write_textfile(target, "# new\n")
    finally:
        os.umask(old_umask)
    assert target.read_text(encoding="utf-8") == "# new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["moonmind_codex.prom"]


def test_a_textfile_that_cannot_be_written_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "a-directory.prom"
    target.mkdir()  # the rename cannot replace a directory
    with pytest.raises(OSError):
        write_textfile(target, "# new\n")
    assert [p.name for p in tmp_path.iterdir()] == ["a-directory.prom"]


def test_status_help_gives_its_exit_codes() -> None:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    helps = {c.dest: c.help for c in action._choices_actions}  # type: ignore[attr-defined]
    assert "exit 0 when every shard is available, 2 when any is quarantined or fenced" in (
        helps["status"] or ""
    )
    assert parser.parse_args(["metrics", "--textfile", "/x.prom"]).textfile == Path("/x.prom")
    assert parser.parse_args(["metrics"]).textfile is None
    assert parser.parse_args(["status", "--json"]).json is True
