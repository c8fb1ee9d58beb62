"""The fleet's status: one row per shard, the fleet's run totals and its metrics (pure).

Standard library only, no I/O: ``moonmind-codex status`` and ``moonmind-codex metrics`` read
the run store (``RunStore.shard_healths``, ``login_fences``, ``latest_runs_by_shard``,
``latest_keepalives``, ``open_runs``, ``run_counts``) and hand the records to
:func:`fleet_status`; :func:`render_table`, :func:`to_json` and :func:`metric_families` shape
the result. A shard is one of:

- ``ok``: it takes runs;
- ``quarantined``: the server rejected its login (``RunStore.quarantine``), with the reason and
  since when;
- ``fenced``: its volume holds a copy of a login another shard keeps
  (``moonmind_codex.core.fence``).

Quarantined and fenced shards are not available. Keep-alive runs (``keepalive-<shard>-...``)
have their own column and totals: the last run, the runs in flight and the fleet's run totals
leave them out. Nothing secret is in a record this module reads (no token, fingerprint or
digest is shown).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from moonmind_codex.core.fence import FenceVerdict, Holder
from moonmind_codex.core.keepalive import RUN_ID_PREFIX
from moonmind_codex.core.shard import Shard
from moonmind_codex.core.states import OPEN_RUN_STATES, RUN_STATUSES

OK, QUARANTINED, FENCED = "ok", "quarantined", "fenced"
METRIC_PREFIX = "moonmind_codex_"
SHARD_LABELS = ("shard", "queue", "volume")


def when_text(moment: datetime | None) -> str:
    """``2026-11-27T12:00:00Z`` (UTC), or ``-`` for never."""
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_keepalive(run_id: str) -> bool:
    """Whether ``run_id`` names a keep-alive run (``keepalive-<shard>-<time>``)."""
    return run_id.startswith(RUN_ID_PREFIX)


@dataclass(frozen=True)
class RunView:
    """A run as the status shows it (aware UTC datetimes)."""

    run_id: str
    status: str
    queue: str | None
    shard: int | None
    host: str | None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def when(self) -> datetime:
        """Its latest recorded moment: finished, else started, else created."""
        return self.finished_at or self.started_at or self.created_at

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "status": self.status, "at": when_text(self.when)}


class HealthRecord(Protocol):
    """A recorded shard health (``runstore.ShardHealth``): ``healthy`` or ``quarantined``."""

    @property
    def volume(self) -> str: ...
    @property
    def host(self) -> str | None: ...
    @property
    def status(self) -> str: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def since(self) -> datetime: ...


@dataclass(frozen=True)
class ShardStatus:
    """One shard's row."""

    shard: int
    queue: str
    volume: str
    host: str | None
    quarantine_reason: str | None = None
    quarantined_since: datetime | None = None
    kept_by: Holder | None = None  # fenced: the holder that keeps this shard's login
    last_keepalive: RunView | None = None
    last_run: RunView | None = None
    in_flight: int = 0

    @property
    def quarantined(self) -> bool:
        return self.quarantined_since is not None

    @property
    def fenced(self) -> bool:
        return self.kept_by is not None

    @property
    def health(self) -> str:
        """``quarantined`` first (a new login is needed either way), then ``fenced``, ``ok``."""
        if self.quarantined:
            return QUARANTINED
        return FENCED if self.fenced else OK

    @property
    def available(self) -> bool:
        return self.health == OK

    def labels(self) -> tuple[tuple[str, str], ...]:
        return (("shard", str(self.shard)), ("queue", self.queue), ("volume", self.volume))


@dataclass(frozen=True)
class FleetStatus:
    shards: tuple[ShardStatus, ...]
    runs: Mapping[str, int]  # runs by status, keep-alives left out
    keepalive_runs: Mapping[str, int]  # keep-alive runs by status

    @property
    def available(self) -> bool:
        """Every shard is available (``status`` exits 0); else it exits 2."""
        return all(s.available for s in self.shards)


def _totals(counts: Mapping[tuple[str, bool], int], keepalive: bool) -> dict[str, int]:
    totals = dict.fromkeys(RUN_STATUSES, 0)
    for (status, is_alive), number in sorted(counts.items()):
        if is_alive == keepalive:  # one (status, kind) is one entry: no sum needed
            totals[status] = number
    return totals


def _shard_of(run: RunView, by_queue: Mapping[str | None, list[int]]) -> int | None:
    """The shard a run is on: its recorded one, else the one shard its queue feeds."""
    if run.shard is not None:
        return run.shard
    feeds = by_queue.get(run.queue, [])
    return feeds[0] if len(feeds) == 1 else None


def fleet_status(
    shards: Sequence[Shard],
    *,
    healths: Iterable[HealthRecord] = (),
    fences: Iterable[FenceVerdict] = (),
    latest_runs: Mapping[int, RunView] | None = None,
    latest_keepalives: Mapping[int, RunView] | None = None,
    open_runs: Iterable[RunView] = (),
    counts: Mapping[tuple[str, bool], int] | None = None,
) -> FleetStatus:
    """The fleet as the run store records it, one row per shard of ``shards`` (in order).

    ``counts`` maps ``(status, is a keep-alive)`` to a number of runs. A pending run not yet on
    a shard counts in flight on the one shard its queue feeds (none in the single-queue mode).
    """
    health_of = {h.volume: h for h in healths}
    fence_of = {v.volume: v for v in fences}
    runs_of = latest_runs or {}
    keepalives_of = latest_keepalives or {}
    by_queue: dict[str | None, list[int]] = {}
    for shard in shards:
        by_queue.setdefault(shard.queue, []).append(shard.number)
    in_flight: dict[int, int] = {}
    for run in open_runs:
        number = _shard_of(run, by_queue)
        if number is not None and not is_keepalive(run.run_id):
            in_flight[number] = in_flight.get(number, 0) + 1
    rows = []
    for shard in shards:
        health = health_of.get(shard.volume)
        quarantine = health if health is not None and health.status == QUARANTINED else None
        verdict = fence_of.get(shard.volume)
        last_run = runs_of.get(shard.number)
        last_keepalive = keepalives_of.get(shard.number)
        hosts = [
            health.host if health is not None else None,
            verdict.holder.host if verdict is not None else None,
            last_run.host if last_run is not None else None,
            last_keepalive.host if last_keepalive is not None else None,
        ]
        rows.append(
            ShardStatus(
                shard=shard.number,
                queue=shard.queue,
                volume=shard.volume,
                host=next((h for h in hosts if h), None),
                quarantine_reason=None if quarantine is None else quarantine.reason or "rejected",
                quarantined_since=None if quarantine is None else quarantine.since,
                kept_by=verdict.owner if verdict is not None and verdict.fenced else None,
                last_keepalive=last_keepalive,
                last_run=last_run,
                in_flight=in_flight.get(shard.number, 0),
            )
        )
    return FleetStatus(
        shards=tuple(rows),
        runs=_totals(counts or {}, keepalive=False),
        keepalive_runs=_totals(counts or {}, keepalive=True),
    )


def problem(row: ShardStatus) -> str | None:
    """What is wrong with an unavailable shard and what to do; None when it is available."""
    found = []
    if row.quarantined:
        found.append(
            f"quarantined since {when_text(row.quarantined_since)} ({row.quarantine_reason}): "
            f"the server rejected its login; sign volume {row.volume} in again: "
            f"moonmind-codex login --shard {row.shard}"
        )
    if row.kept_by is not None:
        found.append(
            f"fenced: its login is a copy of the one {row.kept_by.text()} keeps; sign it "
            f"in with a login of its own: moonmind-codex login --shard {row.shard}"
        )
    return "; ".join(found) or None


def _run_cell(run: RunView | None) -> str:
    return "-" if run is None else f"{run.status} {when_text(run.when)}"


def _named_run_cell(run: RunView | None) -> str:
    return "-" if run is None else f"{run.run_id} {_run_cell(run)}"


def _totals_text(totals: Mapping[str, int]) -> str:
    return ", ".join(f"{status} {number}" for status, number in totals.items())


HEADER = ("shard", "queue", "volume", "host", "health", "last keep-alive", "last run", "in flight")


def table_rows(status: FleetStatus) -> list[tuple[str, ...]]:
    """The table's cells, header first."""
    rows: list[tuple[str, ...]] = [HEADER]
    for row in status.shards:
        rows.append(
            (
                str(row.shard),
                row.queue,
                row.volume,
                row.host or "-",
                row.health,
                _run_cell(row.last_keepalive),
                _named_run_cell(row.last_run),
                str(row.in_flight),
            )
        )
    return rows


def render_table(status: FleetStatus) -> str:
    """A fixed-width table, one line per shard, what to do for each unavailable shard, totals."""
    rows = table_rows(status)
    widths = [max(len(cells[n]) for cells in rows) for n in range(len(HEADER))]
    lines = [
        "  ".join(cell.ljust(widths[n]) for n, cell in enumerate(cells)).rstrip() for cells in rows
    ]
    for row in status.shards:
        text = problem(row)
        if text is not None:
            lines.append(f"shard {row.shard}: {text}")
    lines.append(f"runs: {_totals_text(status.runs)}")
    lines.append(f"keep-alive runs: {_totals_text(status.keepalive_runs)}")
    return "\n".join(lines)


def to_json(status: FleetStatus) -> dict[str, Any]:
    """The status as JSON-ready data (``status --json``)."""
    shards = []
    for row in status.shards:
        shards.append(
            {
                "shard": row.shard,
                "queue": row.queue,
                "volume": row.volume,
                "host": row.host,
                "health": row.health,
                "available": row.available,
                "quarantine": (
                    {"reason": row.quarantine_reason, "since": when_text(row.quarantined_since)}
                    if row.quarantined
                    else None
                ),
                "fence": ({"kept_by": row.kept_by.to_dict()} if row.kept_by is not None else None),
                "problem": problem(row),
                "last_keepalive": None
                if row.last_keepalive is None
                else row.last_keepalive.to_dict(),
                "last_run": None if row.last_run is None else row.last_run.to_dict(),
                "runs_in_flight": row.in_flight,
            }
        )
    return {
        "available": status.available,
        "shards": shards,
        "runs": dict(status.runs),
        "keepalive_runs": dict(status.keepalive_runs),
    }


@dataclass(frozen=True)
class Sample:
    labels: tuple[tuple[str, str], ...]
    value: float


@dataclass(frozen=True)
class MetricFamily:
    """One gauge family, as plain data (``moonmind_codex.cli.metrics`` exposes it)."""

    name: str
    help: str
    labels: tuple[str, ...]
    samples: tuple[Sample, ...]


def _timestamp(moment: datetime) -> float:
    return moment.timestamp()


def metric_families(status: FleetStatus) -> list[MetricFamily]:
    """The gauges of the fleet's status; every name starts with ``moonmind_codex_``."""
    return [
        *_health_families(status.shards),
        *_activity_families(status.shards),
        MetricFamily(
            METRIC_PREFIX + "runs",
            "runs in the run store by status (keep-alives left out)",
            ("status",),
            tuple(Sample((("status", s),), float(n)) for s, n in status.runs.items()),
        ),
        MetricFamily(
            METRIC_PREFIX + "keepalive_runs",
            "keep-alive runs in the run store by status",
            ("status",),
            tuple(Sample((("status", s),), float(n)) for s, n in status.keepalive_runs.items()),
        ),
    ]


def _shard_family(
    name: str, text: str, samples: Iterable[Sample], extra: tuple[str, ...] = ()
) -> MetricFamily:
    return MetricFamily(METRIC_PREFIX + name, text, SHARD_LABELS + extra, tuple(samples))


def _flag(value: bool) -> float:
    return 1.0 if value else 0.0


def _health_families(rows: Sequence[ShardStatus]) -> list[MetricFamily]:
    """Whether each shard takes runs, and why not: quarantine and fence."""
    return [
        _shard_family(
            "shard_available",
            "1 when the shard takes runs: neither quarantined nor fenced",
            (Sample(r.labels(), _flag(r.available)) for r in rows),
        ),
        _shard_family(
            "shard_quarantined",
            "1 when the server rejected the shard's login (reason: why); sign it in again",
            (
                Sample((*r.labels(), ("reason", r.quarantine_reason or "")), _flag(r.quarantined))
                for r in rows
            ),
            ("reason",),
        ),
        _shard_family(
            "shard_quarantined_since_timestamp_seconds",
            "when the shard's current quarantine began (Unix time)",
            (
                Sample(r.labels(), _timestamp(r.quarantined_since))
                for r in rows
                if r.quarantined_since is not None
            ),
        ),
        _shard_family(
            "shard_fenced",
            "1 when the shard's volume holds a copy of a login another shard keeps",
            (Sample(r.labels(), _flag(r.fenced)) for r in rows),
        ),
    ]


def _activity_families(rows: Sequence[ShardStatus]) -> list[MetricFamily]:
    """Each shard's latest keep-alive and run, and its runs in flight."""
    return [
        _shard_family(
            "shard_last_keepalive_timestamp_seconds",
            "when the shard's latest keep-alive run last changed (Unix time)",
            (
                Sample(r.labels(), _timestamp(r.last_keepalive.when))
                for r in rows
                if r.last_keepalive is not None
            ),
        ),
        _shard_family(
            "shard_last_keepalive_succeeded",
            "1 when the shard's latest finished keep-alive succeeded, 0 when it did not",
            (
                Sample(r.labels(), _flag(r.last_keepalive.status == "succeeded"))
                for r in rows
                if r.last_keepalive is not None and r.last_keepalive.status not in OPEN_RUN_STATES
            ),
        ),
        _shard_family(
            "shard_last_run_timestamp_seconds",
            "when the latest run on the shard (not a keep-alive) last changed (Unix time)",
            (
                Sample(r.labels(), _timestamp(r.last_run.when))
                for r in rows
                if r.last_run is not None
            ),
        ),
        _shard_family(
            "shard_runs_in_flight",
            "runs pending or running on the shard (keep-alives left out)",
            (Sample(r.labels(), float(r.in_flight)) for r in rows),
        ),
    ]
