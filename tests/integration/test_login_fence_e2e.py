"""Copied logins fenced and failover of new runs, through a real broker and real shard workers.

Two shard workers stand for two hosts (``MOONMIND_CODEX_HOST_NAME`` host-a and host-b) sharing
one run store and one fleet fingerprint key; every phase runs in a real job container whose
pre-flight runs the real Codex CLI against the shard's volume. The ChatGPT login is fabricated
(fake JWTs): `codex login status` reads only the file, and nothing here reaches the sign-in
service.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.broker import running_broker
from harness.fleet import (
    WORKER_UID,
    RecordedFleet,
    producer_database_url,
    start_worker,
    wait_for_log,
    workspace_prefix,
)
from harness.logins import run_in_volume
from moonmind_codex.core import fence
from moonmind_codex.producer.submit import submit_run
from moonmind_codex.settings import Settings
from moonmind_codex.store.runstore import RunStore
from moonmind_codex.worker.celery_app import create_app
from tests.unit.helpers import chatgpt_auth

SHARDS = 2
HOSTS = {0: "host-a", 1: "host-b"}
KEY_PATH = "/var/lib/moonmind-codex/fingerprint_key"


def chatgpt_login(refresh_token: str) -> bytes:
    login = chatgpt_auth()
    login["tokens"]["refresh_token"] = refresh_token
    return json.dumps(login).encode()


def put_login(volume: str, content: bytes) -> None:
    done = run_in_volume(
        volume, "cat > /home/app/.codex/auth.json && chmod 600 /home/app/.codex/auth.json",
        stdin=content,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def fleet(client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecordedFleet]:
    tag = secrets.token_hex(3)
    work = tmp_path_factory.mktemp("fencefleet")
    state = work / "state"
    state.mkdir()
    os.chown(state, WORKER_UID, WORKER_UID)
    key_file = state / "fingerprint_key"
    key_file.write_text(secrets.token_hex(32) + "\n")
    key_file.chmod(0o400)
    os.chown(key_file, WORKER_UID, WORKER_UID)
    with running_broker(client, work) as url:
        url_file = work / "broker_url"
        url_file.write_text(url)
        url_file.chmod(0o444)
        volumes = [client.volumes.create(f"mmc-test-{tag}-auth-{n}") for n in range(SHARDS)]
        workers = []
        try:
            for n in range(SHARDS):
                workers.append(
                    start_worker(
                        client, tag, url_file, state, n, f"mmc-test-{tag}-fworker-{n}",
                        volumes[n].name, shard_count=SHARDS,
                        extra_env={
                            "MOONMIND_CODEX_HOST_NAME": HOSTS[n],
                            "MOONMIND_CODEX_FINGERPRINT_KEY_FILE": KEY_PATH,
                        },
                    )
                )  # fmt: skip
            for container in workers:
                logs = wait_for_log(container, " ready.")
                assert " ready." in logs, logs[-3000:]
            producer = Settings(
                broker_url=url, shard_count=SHARDS, database_url=producer_database_url(state)
            )
            yield RecordedFleet(
                tag=tag,
                producer=producer,
                store=RunStore.open(producer.database_url),
                workspace=workspace_prefix(tag),
            )
        finally:
            for container in workers:
                container.remove(force=True)
            for leftover in client.volumes.list(filters={"name": f"mmc-test-{tag}-"}):
                leftover.remove(force=True)


def run(fleet: RecordedFleet, shard: int, label: str, *, failover: bool = False) -> str:
    """A two-phase run keyed to ``shard``; its id."""
    producer = Settings(
        broker_url=fleet.producer.broker_url,
        shard_count=SHARDS,
        database_url=fleet.producer.database_url,
        failover=failover,
    )
    run_id = fleet.run_id(label)
    submit_run(
        create_app(producer, fleet.store),
        {
            "run_id": run_id,
            "repository": fleet.repository_on(shard),
            "phases": [
                {"name": "first", "command": ["sh", "-c", "echo first >> marker"]},
                {"name": "second", "command": ["sh", "-c", "echo second >> marker"]},
            ],
        },
        producer,
        fleet.store,
    )
    return run_id


def test_a_login_copied_to_a_second_host_is_reported_and_blocked_there_until_it_changes(
    fleet: RecordedFleet,
) -> None:
    login = chatgpt_login("SECRET-REFRESH-shared-" + secrets.token_hex(8))
    put_login(fleet.volume(0), login)
    first = run(fleet, 0, "owner")
    fleet.expect_status(first, "succeeded")
    # The same login copied into shard 1's volume on the other host.
    put_login(fleet.volume(1), login)
    copy = run(fleet, 1, "copy")
    fleet.expect_status(copy, "blocked")
    # Its first phase ran before the fence knew the login; from then on the copy is blocked.
    assert fleet.phases(copy) == [("first", 1, "succeeded"), ("second", 1, "blocked")]
    record = fleet.store.get_run(copy)
    assert record is not None and record.host == "host-b"
    message = record.preflight_message or ""
    assert (
        "same ChatGPT login as shard 0 (volume " + fleet.volume(0) + " on host host-a)" in message
    )
    assert (
        "on host host-b, sign volume " + fleet.volume(1) + " in with a login of its own" in message
    )
    assert "moonmind-codex login --shard 1" in message
    assert "moonmind-codex login-fence resolve --shard 1" in message
    # Reported on both sides; only the later one is fenced, and the store keeps no token.
    verdicts = {v.volume: v for v in fleet.store.login_fences()}
    owner, later = verdicts[fleet.volume(0)], verdicts[fleet.volume(1)]
    assert (owner.status, [h.volume for h in owner.others]) == ("clear", [fleet.volume(1)])
    assert (later.status, later.owner.host, later.holder.host) == ("fenced", "host-a", "host-b")
    assert fleet.store.unavailable_shards() == {1}
    assert (
        b"SECRET-REFRESH"
        not in Path(fleet.producer.database_url.removeprefix("sqlite:///")).read_bytes()
    )
    # The first shard keeps working.
    fleet.expect_status(run(fleet, 0, "still"), "succeeded")
    # Shard 1 signed in with its own login: the fence lifts by itself.
    put_login(fleet.volume(1), chatgpt_login("SECRET-REFRESH-own-" + secrets.token_hex(8)))
    own = run(fleet, 1, "own")
    fleet.expect_status(own, "succeeded")
    lifted = fleet.store.login_fence(fleet.volume(1))
    assert lifted is not None and (lifted.status, lifted.shared) == ("clear", False)
    assert fleet.store.unavailable_shards() == set()


def test_failover_sends_a_new_run_off_a_quarantined_shard_and_never_moves_a_run_in_flight(
    fleet: RecordedFleet,
) -> None:
    login = chatgpt_login("SECRET-REFRESH-zero-" + secrets.token_hex(8))
    put_login(fleet.volume(0), login)
    put_login(fleet.volume(1), chatgpt_login("SECRET-REFRESH-one-" + secrets.token_hex(8)))
    # A run assigned to shard 0 while it was healthy.
    in_flight = run(fleet, 0, "inflight", failover=True)
    fleet.expect_status(in_flight, "succeeded")
    fleet.store.quarantine(
        fleet.volume(0), host="host-a", shard=0, reason="refresh_token_reused",
        auth_digest=hashlib.sha256(login).hexdigest(),
    )  # fmt: skip
    try:
        # Failover on: a new run keyed to shard 0 runs on shard 1, and stays there.
        moved = run(fleet, 0, "moved", failover=True)
        fleet.expect_status(moved, "succeeded")
        record = fleet.store.get_run(moved)
        assert record is not None and (record.queue, record.host) == ("codex-1", "host-b")
        assert fleet.store.queue_for_run(moved) == "codex-1"
        # The run already on shard 0 does not move: its next phases stay there (blocked).
        assert fleet.store.queue_for_run(in_flight) == "codex-0"
        # Failover off (the default): a new run keyed to shard 0 is blocked there as before.
        stays = run(fleet, 0, "stays")
        fleet.expect_status(stays, "blocked")
        record = fleet.store.get_run(stays)
        assert record is not None and record.queue == "codex-0"
        assert "the server rejected this login" in (record.preflight_message or "")
    finally:
        put_login(fleet.volume(0), chatgpt_login("SECRET-REFRESH-new-" + secrets.token_hex(8)))
    # A new login lifts the quarantine; the moved run's assignment stays where it went.
    fleet.expect_status(run(fleet, 0, "back"), "succeeded")
    assert fleet.store.queue_for_run(moved) == "codex-1"


def test_the_fence_keeps_the_key_out_of_job_containers(fleet: RecordedFleet, client: Any) -> None:
    """The job's environment has the switch, never the key or its file."""
    from moonmind_codex.engine.jobs import JobSpec, job_container

    settings = Settings(shard_count=SHARDS, fingerprint_key_file=Path(KEY_PATH))
    spec = JobSpec(
        run_id="r", phase="p", command=["true"], shard=settings.locate_shard(0), timeout_s=5,
        preflight=True, fence=True,
    )  # fmt: skip
    env = job_container(settings, spec).environment
    assert env["MOONMIND_CODEX_GATE_FENCE"] == "1"
    assert not any("KEY" in name and "FENCE" not in name for name in env)
    assert KEY_PATH not in json.dumps(env)
    assert fence.MIN_KEY_BYTES == 32
