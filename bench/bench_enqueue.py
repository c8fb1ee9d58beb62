"""Enqueue -> job container running, through the real broker and a real worker shard.

Side by side in one run, interleaved (one of each per round, so both see the same machine):
(a) a Codex phase sent through RabbitMQ to a worker container, with records on: the worker
    records the attempt and launches the job container, whose first step is the pre-flight
    login check (the real `codex login status` on the first phase, then the cached verdict);
(b) the same job launched directly (no broker, no records, no pre-flight), the floor for "a
    container is running". The job's first act is to print the host clock; latency = that time
minus the moment the producer sent the task.
Targets: (a) p50 <= 1.5x (b) p50 (issue 8); (a) p50 <= 2 s.
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
from bench.stats import (
    distribution,
    finish,
    format_distribution,
    machine,
    target_row,
)
from harness.broker import running_broker
from harness.fleet import (
    WORKER_UID,
    producer_database_url,
    start_worker,
    wait_for_log,
)
from harness.logins import api_key_login
from moonmind_codex.engine.jobs import JobSpec, launch_job
from moonmind_codex.producer.router import route_key
from moonmind_codex.settings import Settings
from moonmind_codex.worker.celery_app import CODEX_PHASE_TASK, create_app

TARGET_RATIO = 1.5
TARGET_P50_S = 2.0
JOB_IMAGE = "moonmind-codex/job:latest"
STAMP = ["sh", "-c", "date +%s.%N"]


def first_stamp(log: Path) -> float:
    return float(log.read_text().split()[0])


def through_broker(
    client: Any, work: Path, tag: str, volume: str, runs: int
) -> tuple[list[float], list[float], list[float]]:
    """(enqueue -> job running, enqueue -> result, direct launch -> job running), interleaved."""
    state = work / "state"
    state.mkdir()
    os.chown(state, WORKER_UID, WORKER_UID)
    with running_broker(client, work) as url:
        url_file = work / "broker_url"
        url_file.write_text(url)
        url_file.chmod(0o444)
        worker = start_worker(
            client,
            f"bench-{tag}",
            url_file,
            state,
            0,
            f"mmc-bench-{tag}-worker-0",
            volume,
            extra_env={"MOONMIND_CODEX_AUTH_VOLUME": volume},
            shard_count=1,
        )
        try:
            assert " ready." in wait_for_log(worker, " ready.", 90)
            settings = Settings(
                broker_url=url, shard_count=1, database_url=producer_database_url(state)
            )
            app = create_app(settings)
            assert route_key("bench/repo", settings).queue == "codex-0"
            direct_settings = Settings(
                shard=0,
                auth_volume_override=volume,
                workspace_volume_prefix=f"mmc-bench-{tag}-ws-",
                artifacts_dir=work / "direct",
            )
            running, end_to_end, direct = [], [], []
            for i in range(runs + 1):
                sent = time.time()
                result = app.send_task(
                    CODEX_PHASE_TASK,
                    kwargs={
                        "run_id": f"bench-{tag}-{i}",
                        "phase": "p",
                        "repository": "bench/repo",
                        "command": STAMP,
                    },
                ).get(timeout=120)
                done = time.time()
                assert result["outcome"] == "succeeded", result
                assert result["preflight_status"] == "ok", result
                log = state / Path(result["log_path"]).relative_to("/var/lib/moonmind-codex")
                launched = direct_launch(client, direct_settings, f"direct-{tag}-{i}")
                if i:  # the first of each is a warm-up (and the broker's runs the real CLI)
                    running.append(first_stamp(log) - sent)
                    end_to_end.append(done - sent)
                    direct.append(launched)
            return running, end_to_end, direct
        finally:
            worker.remove(force=True)


def direct_launch(client: Any, settings: Settings, run_id: str) -> float:
    """Launch -> job running of the same job with no broker, records or pre-flight."""
    sent = time.time()
    spec = JobSpec(
        run_id=run_id, phase="p", command=STAMP, shard=settings.locate_shard(0), timeout_s=60
    )
    return first_stamp(launch_job(settings, spec, client).log_path) - sent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    client = docker.from_env()
    tag = secrets.token_hex(3)
    work = Path(tempfile.mkdtemp(prefix="mmc-bench-"))
    volume = f"mmc-bench-{tag}-auth-0"
    client.volumes.create(volume)
    try:
        api_key_login(volume)  # a real `codex login --with-api-key`, fake key on stdin
        broker_runs, end_to_end, direct = through_broker(client, work, tag, volume, args.runs)
    finally:
        for prefix in (f"mmc-bench-{tag}-", f"mmc-test-bench-{tag}-"):
            for v in client.volumes.list(filters={"name": prefix}):
                v.remove(force=True)
    d_broker, d_direct, d_total = (
        distribution(broker_runs),
        distribution(direct),
        distribution(end_to_end),
    )
    details = machine()
    print("machine:", json.dumps(details))
    print(format_distribution("enqueue -> job running (broker)", d_broker))
    print(format_distribution("launch -> job running (direct)", d_direct))
    print(format_distribution("enqueue -> result (broker)", d_total))
    ratio = d_broker["p50"] / d_direct["p50"]
    print(f"ratio broker/direct p50: {ratio:.2f}x (the broker hop, the records, the pre-flight)")
    targets = [
        target_row(
            "enqueue -> job running p50 / direct launch p50", ratio, TARGET_RATIO, "<=", "{:.2f}x"
        ),
        target_row(
            "enqueue -> job running p50 (s)", d_broker["p50"], TARGET_P50_S, "<=", "{:.2f} s"
        ),
    ]
    return finish(
        targets,
        args.json,
        machine=details,
        through_broker=d_broker,
        direct=d_direct,
        enqueue_to_result=d_total,
    )


if __name__ == "__main__":
    sys.exit(main())
