"""Runs through the real broker and three real worker shards, with records on.

Side by side in one run:
(a) throughput of no-op Codex runs (one phase, `true`) across 3 shards: runs per minute and
    submit -> run succeeded (from the run store) p50/p95;
(b) latency of an ordinary default-queue task (`moonmind_codex.ping`) with every Codex queue
    idle, then with every Codex queue saturated (each shard busy with a backlog of phases).
Target: (b) saturated / idle p50 <= 1.05: Codex work never slows the default queue.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import docker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.stats import distribution, format_distribution, machine
from harness.broker import running_broker
from harness.fleet import (
    WORKER_UID,
    producer_database_url,
    start_default_worker,
    start_worker,
    wait_for_log,
)
from harness.logins import api_key_login
from moonmind_codex.celery_app import PING_TASK, create_app
from moonmind_codex.router import route_key
from moonmind_codex.runstore import RunStore
from moonmind_codex.settings import Settings
from moonmind_codex.submit import submit_run

SHARDS = 3
TARGET_RATIO = 1.05


def repositories(settings: Settings, per_shard: int) -> list[str]:
    """Keys spread evenly over the shards."""
    found: dict[int, list[str]] = {n: [] for n in range(SHARDS)}
    i = 0
    while any(len(v) < per_shard for v in found.values()):
        key = f"bench/runs-{i}"
        shard = int(route_key(key, settings).queue.rsplit("-", 1)[1])
        if len(found[shard]) < per_shard:
            found[shard].append(key)
        i += 1
    return [k for keys in found.values() for k in keys]


def wait_all(store: RunStore, run_ids: list[str], timeout_s: float) -> dict[str, float]:
    """When each run succeeded (time.time()), polling the run store."""
    done: dict[str, float] = {}
    deadline = time.monotonic() + timeout_s
    while len(done) < len(run_ids):
        assert time.monotonic() < deadline, f"{len(done)}/{len(run_ids)} runs finished"
        for run_id in run_ids:
            if run_id not in done:
                record = store.get_run(run_id)
                if record is not None and record.status in ("succeeded", "failed", "blocked"):
                    assert record.status == "succeeded", (run_id, record.status)
                    done[run_id] = time.time()
        time.sleep(0.05)
    return done


def ping_latencies(app: Any, count: int) -> list[float]:
    samples = []
    for i in range(count):
        sent = time.monotonic()
        app.send_task(PING_TASK, kwargs={"value": i}).get(timeout=60)
        samples.append(time.monotonic() - sent)
    return samples


def main() -> int:  # noqa: PLR0915 - one benchmark, read top to bottom
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs-per-shard", type=int, default=10)
    parser.add_argument("--pings", type=int, default=30)
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    client = docker.from_env()
    tag = secrets.token_hex(3)
    work = Path(tempfile.mkdtemp(prefix="mmc-bench-runs-"))
    state = work / "state"
    state.mkdir()
    os.chown(state, WORKER_UID, WORKER_UID)
    fleet_tag = f"benchruns-{tag}"
    volumes = [client.volumes.create(f"mmc-test-{fleet_tag}-auth-{n}") for n in range(SHARDS)]
    workers: list[Any] = []
    default_worker = None
    try:
        for volume in volumes:
            api_key_login(volume.name)
        with running_broker(client, work) as url:
            url_file = work / "broker_url"
            url_file.write_text(url)
            url_file.chmod(0o444)
            for n in range(SHARDS):
                workers.append(
                    start_worker(
                        client,
                        fleet_tag,
                        url_file,
                        state,
                        n,
                        f"mmc-bench-{tag}-w{n}",
                        volumes[n].name,
                    )
                )
            for worker in workers:
                assert " ready." in wait_for_log(worker, " ready.", 90)
            settings = Settings(
                broker_url=url, shard_count=SHARDS, database_url=producer_database_url(state)
            )
            default_worker = start_default_worker(url, settings.database_url, "default@bench")
            store = RunStore.open(settings.database_url)
            app = create_app(settings, store)
            ping_latencies(app, 3)  # warm-up: connections, the default worker's first task

            # (a) throughput: every run submitted at once, the shards work in parallel.
            keys = repositories(settings, args.runs_per_shard)
            submitted: dict[str, float] = {}
            began = time.time()
            for i, key in enumerate(keys):
                run_id = f"bench-{tag}-{i}"
                submitted[run_id] = time.time()
                submit_run(
                    app,
                    {
                        "run_id": run_id,
                        "repository": key,
                        "phases": [{"name": "noop", "command": ["true"]}],
                    },
                    settings,
                    store,
                )
            finished = wait_all(store, list(submitted), 900)
            elapsed = max(finished.values()) - began
            per_run = distribution([finished[r] - submitted[r] for r in submitted])
            per_minute = len(submitted) / elapsed * 60

            # (b) default-queue latency, idle then with every Codex queue saturated.
            idle = distribution(ping_latencies(app, args.pings))
            backlog = []
            for i, key in enumerate(repositories(settings, 6)):
                run_id = f"bench-{tag}-busy-{i}"
                backlog.append(run_id)
                submit_run(
                    app,
                    {
                        "run_id": run_id,
                        "repository": key,
                        "phases": [{"name": "busy", "command": ["sleep", "2"]}],
                    },
                    settings,
                    store,
                )
            # Saturated: every shard is running a job and has more queued behind it.
            deadline = time.monotonic() + 60
            while {r.shard for r in store.list_runs(status="running")} != set(range(SHARDS)):
                assert time.monotonic() < deadline, "the shards did not all start a job"
                time.sleep(0.05)
            saturated = distribution(ping_latencies(app, args.pings))
            wait_all(store, backlog, 900)
    finally:
        if default_worker is not None:
            default_worker.terminate()
            default_worker.wait(timeout=30)
        for worker in workers:
            worker.remove(force=True)
        for leftover in client.volumes.list(filters={"name": f"mmc-test-{fleet_tag}-"}):
            leftover.remove(force=True)
    ratio = saturated["p50"] / idle["p50"]
    print("machine:", json.dumps(machine()))
    print(
        f"throughput: {len(submitted)} one-phase runs over {SHARDS} shards in {elapsed:.1f} s = "
        f"{per_minute:.1f} runs/min"
    )
    print(format_distribution("submit -> run succeeded", per_run))
    print(format_distribution("default-queue ping, Codex idle", idle))
    print(format_distribution("default-queue ping, Codex saturated", saturated))
    met = ratio <= TARGET_RATIO
    print(
        f"ratio saturated/idle p50: {ratio:.3f} (target <= {TARGET_RATIO}): "
        f"{'MET' if met else 'NOT MET'}"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "machine": machine(),
                    "runs": len(submitted),
                    "shards": SHARDS,
                    "runs_per_minute": per_minute,
                    "submit_to_succeeded": per_run,
                    "ping_idle": idle,
                    "ping_saturated": saturated,
                    "ratio_saturated_idle_p50": ratio,
                    "target": {"ratio_saturated_idle_p50_max": TARGET_RATIO},
                    "target_met": met,
                },
                indent=2,
            )
        )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
