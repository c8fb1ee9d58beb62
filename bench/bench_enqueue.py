"""Enqueue -> job container running, through the real broker and a real worker shard.

Side by side in one run: (a) a Codex phase sent through RabbitMQ to a worker container, which
runs the pre-flight and launches the job; (b) the same job launched directly (no broker, no
pre-flight), the floor for "a container is running". The job's first act is to print the
host clock; latency = that time minus the moment the producer sent the task.
Target: (a) p50 <= 2 s.
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

import docker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.stats import distribution, format_distribution, machine
from harness.broker import running_broker
from harness.logins import api_key_login
from moonmind_codex.celery_app import CODEX_PHASE_TASK, create_app
from moonmind_codex.jobs import JobSpec, launch_job
from moonmind_codex.router import route_key
from moonmind_codex.settings import Settings

TARGET_P50_S = 2.0
JOB_IMAGE = "moonmind-codex/job:latest"
STAMP = ["sh", "-c", "date +%s.%N"]


def first_stamp(log: Path) -> float:
    return float(log.read_text().split()[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    client = docker.from_env()
    tag = secrets.token_hex(3)
    work = Path(tempfile.mkdtemp(prefix="mmc-bench-"))
    state = work / "state"
    state.mkdir()
    os.chown(state, 10001, 10001)
    template = f"mmc-bench-{tag}-auth-{{shard}}"
    volume = template.format(shard=0)
    client.volumes.create(volume)
    worker = None
    try:
        api_key_login(volume)  # a real `codex login --with-api-key`, fake key on stdin
        with running_broker(client, work) as url:
            url_file = work / "broker_url"
            url_file.write_text(url)
            url_file.chmod(0o444)
            worker = client.containers.run(
                "moonmind-codex/worker:latest",
                detach=True,
                network_mode="host",
                name=f"mmc-bench-{tag}-worker-0",
                group_add=[str(os.stat("/var/run/docker.sock").st_gid)],
                environment={
                    "MOONMIND_CODEX_SHARD": "0",
                    "MOONMIND_CODEX_SHARD_COUNT": "1",
                    "MOONMIND_CODEX_AUTH_VOLUME_TEMPLATE": template,
                    "MOONMIND_CODEX_BROKER_URL_FILE": "/run/secrets/url",
                    "MOONMIND_CODEX_ARTIFACTS_DIR": "/var/lib/moonmind-codex/artifacts",
                    "MOONMIND_CODEX_WORKSPACE_VOLUME": f"mmc-bench-{tag}-ws",
                },
                volumes={
                    "/var/run/docker.sock": {"bind": "/var/run/docker.sock"},
                    str(state): {"bind": "/var/lib/moonmind-codex"},
                    str(url_file): {"bind": "/run/secrets/url", "mode": "ro"},
                },
                labels={"io.moonmind.codex.role": "worker", "io.moonmind.codex.volume": volume},
            )
            deadline = time.monotonic() + 90
            while b" ready." not in worker.logs():
                assert time.monotonic() < deadline, worker.logs()[-2000:]
                time.sleep(0.2)
            settings = Settings(
                broker_url=url, shard_count=1, assignments_db=work / "assignments.sqlite3"
            )
            app = create_app(settings)
            assert route_key("bench/repo", settings).queue == "codex-0"
            through_broker, end_to_end = [], []
            for i in range(args.runs + 1):
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
                log = state / Path(result["log_path"]).relative_to("/var/lib/moonmind-codex")
                if i:  # the first is a warm-up
                    through_broker.append(first_stamp(log) - sent)
                    end_to_end.append(done - sent)
            direct_settings = Settings(
                shard=0,
                auth_volume_override=volume,
                workspace_volume=f"mmc-bench-{tag}-ws",
                artifacts_dir=work / "direct",
            )
            direct = []
            for i in range(args.runs):
                sent = time.time()
                res = launch_job(
                    direct_settings,
                    JobSpec(
                        run_id=f"direct-{i}",
                        phase="p",
                        command=STAMP,
                        shard=0,
                        queue="codex-0",
                        volume=volume,
                        timeout_s=60,
                    ),
                    client,
                )
                direct.append(first_stamp(res.log_path) - sent)
    finally:
        if worker is not None:
            worker.remove(force=True)
        for v in client.volumes.list(filters={"name": f"mmc-bench-{tag}-"}):
            v.remove(force=True)
    d_broker, d_direct, d_total = (
        distribution(through_broker),
        distribution(direct),
        distribution(end_to_end),
    )
    print("machine:", json.dumps(machine()))
    print(format_distribution("enqueue -> job running (broker)", d_broker))
    print(format_distribution("launch -> job running (direct)", d_direct))
    print(format_distribution("enqueue -> result (broker)", d_total))
    print(
        f"ratio broker/direct p50: {d_broker['p50'] / d_direct['p50']:.2f}x "
        f"(the difference is the broker hop plus the pre-flight)"
    )
    met = d_broker["p50"] <= TARGET_P50_S
    print(f"target: enqueue -> job running p50 <= {TARGET_P50_S} s: {'MET' if met else 'NOT MET'}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "machine": machine(),
                    "through_broker": d_broker,
                    "direct": d_direct,
                    "enqueue_to_result": d_total,
                    "target_met": met,
                },
                indent=2,
            )
        )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
