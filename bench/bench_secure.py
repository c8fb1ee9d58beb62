"""What the trust boundary costs: enqueue -> job running with TLS and signing on, against off.

Two one-shard fleets side by side in one run, each a real RabbitMQ and a real worker container
on its own signed-in volume:
(a) off: plain AMQP, one all-permissions user, unsigned JSON task messages;
(b) on: the broker as the playbook runs it (TLS only with a fleet CA, one user per role, the
    topology declared by the broker), task messages signed by the producer and verified by
    the worker before anything runs.
Phases alternate between the two (the order flips every round), so both see the same machine.
The job's first act prints the host clock; latency = that time minus the send.
Target (issue 9): (b) p50 <= 1.10x (a) p50.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
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
from harness.fleet import STATE_DIR, WORKER_UID, producer_database_url, start_worker, wait_for_log
from harness.logins import api_key_login
from harness.secure_broker import running_secure_broker
from moonmind_codex.settings import Settings
from moonmind_codex.worker.celery_app import CODEX_PHASE_TASK, create_app

TARGET_RATIO = 1.10
STAMP = ["sh", "-c", "date +%s.%N"]


@dataclass
class Side:
    name: str
    app: Any
    state: Path

    def phase(self, run_id: str) -> float:
        """Send one phase; enqueue -> job running, in seconds."""
        sent = time.time()
        result = self.app.send_task(
            CODEX_PHASE_TASK,
            kwargs={"run_id": run_id, "phase": "p", "repository": "bench/repo", "command": STAMP},
        ).get(timeout=120)
        assert result["outcome"] == "succeeded", result
        log = self.state / Path(result["log_path"]).relative_to(STATE_DIR)
        return float(log.read_text().split()[0]) - sent


def _state(work: Path) -> Path:
    state = work / "state"
    state.mkdir(parents=True)
    os.chown(state, WORKER_UID, WORKER_UID)
    return state


def _worker(client: Any, tag: str, work: Path, state: Path, url: str, env: dict[str, str]) -> Any:
    url_file = work / "broker_url"
    url_file.write_text(url)
    url_file.chmod(0o444)
    volume = f"mmc-bench-{tag}-auth-0"
    client.volumes.create(volume)
    api_key_login(volume)  # a real `codex login --with-api-key`, fake key on stdin
    worker = start_worker(
        client,
        f"bench-{tag}",
        url_file,
        state,
        0,
        f"mmc-bench-{tag}-worker-0",
        volume,
        extra_env={"MOONMIND_CODEX_AUTH_VOLUME": volume, **env},
        shard_count=1,
    )
    assert " ready." in wait_for_log(worker, " ready.", 120), worker.logs()[-3000:]
    return worker


@contextmanager
def plain_side(client: Any, work: Path, tag: str) -> Iterator[Side]:
    state = _state(work)
    with running_broker(client, work) as url:
        worker = _worker(client, tag, work, state, url, {})
        try:
            settings = Settings(
                broker_url=url, shard_count=1, database_url=producer_database_url(state)
            )
            yield Side("off", create_app(settings), state)
        finally:
            worker.remove(force=True)


@contextmanager
def secure_side(client: Any, work: Path, tag: str) -> Iterator[Side]:
    state = _state(work)
    with running_secure_broker(client, work, shard_count=1) as broker:
        producer = broker.ca.issue("signing-producer")
        worker_env = broker.signed_worker(state, producer)
        worker = _worker(client, tag, work, state, broker.url("codex-shard-0"), worker_env)
        try:
            settings = Settings(
                broker_url=broker.url("codex-producer"),
                broker_ca_path=broker.ca.cert_path,
                shard_count=1,
                database_url=producer_database_url(state),
                signing_key_path=producer.key,
                signing_cert_path=producer.cert,
                signing_trust_dir=state / "pki" / "trusted",
                declare_queues=False,
            )
            yield Side("on", create_app(settings), state)
        finally:
            worker.remove(force=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    client = docker.from_env()
    tag = secrets.token_hex(3)
    work = Path(tempfile.mkdtemp(prefix="mmc-bench-"))
    samples: dict[str, list[float]] = {"off": [], "on": []}
    load_before = os.getloadavg()
    try:
        with ExitStack() as stack:
            sides = [
                stack.enter_context(plain_side(client, work / "off", f"{tag}off")),
                stack.enter_context(secure_side(client, work / "on", f"{tag}on")),
            ]
            for i in range(args.runs + 1):
                for side in sides if i % 2 else reversed(sides):
                    latency = side.phase(f"bench-{tag}-{side.name}-{i}")
                    if i:  # the first of each is a warm-up (the real CLI's first verdict)
                        samples[side.name].append(latency)
    finally:
        for v in client.volumes.list(filters={"name": f"mmc-bench-{tag}"}):
            v.remove(force=True)
        for v in client.volumes.list(filters={"name": f"mmc-test-bench-{tag}"}):
            v.remove(force=True)
    off, on = distribution(samples["off"]), distribution(samples["on"])
    details = machine()
    print("machine:", json.dumps(details))
    print(format_distribution("enqueue -> job running, TLS+signing off", off))
    print(format_distribution("enqueue -> job running, TLS+signing on", on))
    ratio = on["p50"] / off["p50"]
    print(f"ratio on/off p50: {ratio:.3f}x, p95: {on['p95'] / off['p95']:.3f}x")
    targets = [
        target_row(
            "enqueue -> job running p50, TLS+signing on / off", ratio, TARGET_RATIO, "<=", "{:.2f}x"
        )
    ]
    return finish(
        targets,
        args.json,
        machine=details,
        load_average_before=list(load_before),
        load_average_after=list(os.getloadavg()),
        runs=args.runs,
        tls_signing_off=off,
        tls_signing_on=on,
    )


if __name__ == "__main__":
    sys.exit(main())
