"""Keep-alives through a real RabbitMQ, a real worker container and the real Codex CLI.

One signed-in shard (a ChatGPT login, fake tokens) and a short horizon: the worker's own
keep-alive thread sends a keep-alive through the shard's queue, which waits behind a job
holding the volume's lock, runs once, is recorded and audited, and, since the sign-in service
cannot be reached from here, fails in a way the worker classifies as transient: no quarantine.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from harness.broker import running_broker
from harness.fleet import WORKER_UID, producer_database_url, start_worker, wait_for_log
from harness.logins import CODEX_HOME, JOB_IMAGE, run_in_volume
from moonmind_codex.core import health
from moonmind_codex.core.keepalive import KEEPALIVE_PHASE, run_id_prefix
from moonmind_codex.store.models import RunRecord
from moonmind_codex.store.runstore import RunStore
from tests.unit.helpers import chatgpt_auth

KEEPALIVE_ENV = {
    "MOONMIND_CODEX_KEEPALIVE_ENABLED": "true",
    "MOONMIND_CODEX_KEEPALIVE_CHECK_SECONDS": "1",
    # Idle after 3 s; a login refreshed a day ago is past a horizon of half a day.
    "MOONMIND_CODEX_KEEPALIVE_IDLE_MINUTES": "0.05",
    "MOONMIND_CODEX_KEEPALIVE_AFTER_DAYS": "0.5",
    # No second keep-alive within 6 minutes (the test watches for one).
    "MOONMIND_CODEX_KEEPALIVE_RETRY_HOURS": "0.1",
    "MOONMIND_CODEX_KEEPALIVE_STAGGER_MINUTES": "0",
    "MOONMIND_CODEX_KEEPALIVE_TIMEOUT_SECONDS": "120",
    # The keep-alive waits (busy, retried every second) while the lock is held.
    "MOONMIND_CODEX_BUSY_MAX_RETRIES": "120",
}
HOLD_SECONDS = 15


@dataclass
class KeepaliveFleet:
    tag: str
    state: Path
    volume: str
    url_file: Path


@pytest.fixture
def fleet(client: Any, tmp_path: Path) -> Iterator[KeepaliveFleet]:
    tag = secrets.token_hex(3)
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, WORKER_UID, WORKER_UID)
    volume = client.volumes.create(f"mmc-test-{tag}-auth-0")
    try:
        login = json.dumps(chatgpt_auth(access_exp_days=5, last_refresh_days=1)).encode()
        written = run_in_volume(
            volume.name,
            f"umask 077 && cat > {CODEX_HOME}/auth.json && codex login status",
            stdin=login,
        )
        assert written.returncode == 0, written.stderr
        with running_broker(client, tmp_path) as url:
            url_file = tmp_path / "broker_url"
            url_file.write_text(url)
            url_file.chmod(0o444)
            yield KeepaliveFleet(tag=tag, state=state, volume=volume.name, url_file=url_file)
    finally:
        for leftover in client.containers.list(all=True, filters={"name": f"mmc-test-{tag}-"}):
            leftover.remove(force=True)
        for leftover in client.volumes.list(filters={"name": f"mmc-test-{tag}-"}):
            # A job container the worker started (its own name) may still hold the volume.
            for user in client.containers.list(all=True, filters={"volume": leftover.name}):
                user.remove(force=True)
            leftover.remove(force=True)


def _keepalives(store: RunStore) -> list[RunRecord]:
    return [r for r in store.list_runs(limit=1000) if r.id.startswith(run_id_prefix(0))]


def _wait(what: str, probe: Any, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.5)
    raise TimeoutError(f"{what} not seen in {timeout_s} s")


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def test_an_idle_signed_in_shard_gets_one_keepalive_through_its_queue(
    client: Any, fleet: KeepaliveFleet
) -> None:
    # A job already holds the volume's lock (the image's entry point takes it, as for every
    # phase, login and move): the keep-alive must wait for it, not share the login.
    holder = client.containers.run(
        JOB_IMAGE,
        ["sleep", str(HOLD_SECONDS)],
        name=f"mmc-test-{fleet.tag}-holder",
        user="1000:1000",
        network_mode="none",
        volumes={fleet.volume: {"bind": CODEX_HOME, "mode": "rw"}},
        detach=True,
    )
    worker = start_worker(
        client,
        fleet.tag,
        fleet.url_file,
        fleet.state,
        0,
        f"mmc-test-{fleet.tag}-kworker-0",
        fleet.volume,
        KEEPALIVE_ENV,
        shard_count=1,
    )
    logs = wait_for_log(worker, " ready.")
    assert " ready." in logs, logs[-3000:]
    store = RunStore.open(producer_database_url(fleet.state))

    # Scheduled: the shard is idle and its login older than the horizon.
    # Sent: the record is made first, its queue and chain id once the chain is published.
    sent = _wait(
        "a keep-alive run, sent", lambda: [r for r in _keepalives(store) if r.chain_id], 60
    )
    assert len(sent) == 1
    run = sent[0]
    assert run.queue == "codex-0"
    holder.reload()
    assert holder.status == "running"  # it was sent while the lock was held

    # It ran once, after the holder let go, and failed: no sign-in service from here.
    final = _wait(
        "the keep-alive's end",
        lambda: (
            (r := store.get_run(run.id)) is not None and r.status in ("failed", "succeeded") and r
        ),
        HOLD_SECONDS + 150,
    )
    assert final.status == "failed"
    assert (final.shard, final.volume, final.host) == (0, fleet.volume, "e2e-host")
    attempts = store.attempts(run.id)
    assert [(a.phase, a.attempt, a.status) for a in attempts] == [(KEEPALIVE_PHASE, 1, "failed")]
    assert attempts[0].exit_code == 1

    # Audited like every phase: busy while the lock was held, then one real start and end.
    audit_file = fleet.state / "audit" / "codex-audit.jsonl"
    records = [json.loads(line) for line in audit_file.read_text().splitlines()]
    mine = [r for r in records if r.get("run_id") == run.id]
    assert all(r["queue"] == "codex-0" and r["volume"] == fleet.volume for r in mine)
    ends = [r["outcome"] for r in mine if r["event"] == "codex_phase_finished"]
    assert "busy" in ends and ends[-1] == "failed", ends
    assert ends.count("failed") == 1
    holder.reload()
    released = _when(holder.attrs["State"]["FinishedAt"][:26] + "Z")
    # Never two jobs on the volume: the keep-alive's job got the lock only once the holder had
    # let it go. (Its "started" record may come a moment before the holder's end: the worker
    # records the attempt, then the job's entry point takes the lock; the holder's FinishedAt
    # is stamped by the engine after its process let the lock go.)
    last_end = _when([r for r in mine if r["event"] == "codex_phase_finished"][-1]["timestamp"])
    assert last_end >= released, (last_end, released)

    # Classified as a transient failure: the shard stays in service.
    log_path = fleet.state / Path(attempts[0].log_path or "").relative_to("/var/lib/moonmind-codex")
    log_text = log_path.read_text()
    assert "OpenAI Codex v0.169" in log_text
    assert health.classify(log_text, 1) == health.Classification("transient", "network")
    shard_health = store.shard_health(fleet.volume)
    assert shard_health is None or not shard_health.quarantined
    worker_logs = wait_for_log(worker, "failed transiently (network)")
    assert f"phase keepalive of run {run.id} failed transiently (network)" in worker_logs
    assert f"keep-alive {run.id} sent to codex-0" in worker_logs
    for secret in ("SECRET-REFRESH-beef", "SECRET-ACCESS-f00d"):
        assert secret not in worker_logs and secret not in audit_file.read_text()

    # No second keep-alive within the retry interval, though the shard is idle again and
    # checked every second.
    time.sleep(8)
    assert [r.id for r in _keepalives(store)] == [run.id]
    worker.remove(force=True)


def test_the_keepalive_command_runs_in_the_job_image(fleet: KeepaliveFleet) -> None:
    """The default command is one the job image's CLI takes (it fails only on the network)."""
    from moonmind_codex.settings import DEFAULT_KEEPALIVE_COMMAND

    done = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--entrypoint", "codex", JOB_IMAGE,
         *DEFAULT_KEEPALIVE_COMMAND[1:2], "--help"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for option in DEFAULT_KEEPALIVE_COMMAND[2:-1]:
        if option.startswith("--"):
            assert option in done.stdout, option
