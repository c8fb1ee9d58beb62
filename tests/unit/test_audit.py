from __future__ import annotations

import json
import threading
from pathlib import Path

from moonmind_codex.core.phase_result import PhaseResult
from moonmind_codex.core.shard import Shard
from moonmind_codex.store import audit

SHARD = Shard(number=1, queue="codex-1", volume="codex_auth_1", host="h")

FIELDS = {
    "event",
    "run_id",
    "phase",
    "queue",
    "shard",
    "volume",
    "host",
    "worker",
    "task_id",
    "container_id",
    "preflight_status",
    "outcome",
    "exit_code",
    "duration_s",
    "timestamp",
}


def _start() -> audit.AuditRecord:
    return audit.started(run_id="r", phase="p", shard=SHARD, worker="codex-1@h", task_id="t")


def test_start_and_finish_records(tmp_path: Path) -> None:
    log = tmp_path / "audit" / "a.jsonl"
    start = _start()
    audit.emit(start, log)
    audit.emit(
        audit.finished(
            start,
            PhaseResult(
                run_id="r",
                phase="p",
                shard=SHARD,
                worker="codex-1@h",
                outcome="succeeded",
                preflight_status="ok",
                container_id="c1",
                exit_code=0,
            ),
            duration_s=1.23456,
        ),
        log,
    )
    records = audit.read_records(log)
    assert [r["event"] for r in records] == ["codex_phase_started", "codex_phase_finished"]
    assert all(set(r) == FIELDS for r in records)
    assert records[1]["duration_s"] == 1.235 and records[1]["container_id"] == "c1"
    assert records[0]["outcome"] is None
    assert (records[1]["queue"], records[1]["shard"], records[1]["volume"], records[1]["host"]) == (
        "codex-1",
        1,
        "codex_auth_1",
        "h",
    )
    assert (records[1]["outcome"], records[1]["preflight_status"]) == ("succeeded", "ok")


def test_concurrent_writers_never_interleave_lines(tmp_path: Path) -> None:
    log = tmp_path / "a.jsonl"

    def write() -> None:
        for _ in range(200):
            audit.emit(_start(), log)

    threads = [threading.Thread(target=write) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = log.read_text().splitlines()
    assert len(lines) == 800
    assert all(json.loads(line)["run_id"] == "r" for line in lines)


def test_missing_file_reads_as_empty(tmp_path: Path) -> None:
    assert audit.read_records(tmp_path / "none.jsonl") == []


def _append_many(log: str, writer: int, count: int) -> None:
    for n in range(count):
        # Long lines: a torn write would show well past the first few kilobytes.
        record = audit.started(
            run_id=f"w{writer}-{n:04d}", phase="p" * 4000, shard=SHARD, worker=f"w{writer}",
            task_id=None,
        )  # fmt: skip
        audit.emit(record, Path(log))


def test_appends_from_several_processes_never_interleave_or_get_lost(tmp_path: Path) -> None:
    import multiprocessing

    log = tmp_path / "audit" / "shared.jsonl"
    writers, count = 4, 150
    context = multiprocessing.get_context("spawn")  # separate interpreters, as workers are
    procs = [
        context.Process(target=_append_many, args=(str(log), w, count)) for w in range(writers)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
        assert proc.exitcode == 0
    records = audit.read_records(log)  # every line parses as one whole JSON record
    assert len(records) == writers * count
    for w in range(writers):
        mine = [r["run_id"] for r in records if r["worker"] == f"w{w}"]
        assert mine == [f"w{w}-{n:04d}" for n in range(count)]  # each writer's order kept
