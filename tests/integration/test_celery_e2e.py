"""End to end through a real RabbitMQ with real worker containers, volumes and Codex CLI."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kombu.connection import Connection
from kombu.entity import Exchange, Queue

from harness.broker import running_broker
from harness.engine import watching_engine
from harness.fleet import (
    BUSY_MAX_RETRIES,
    TEST_ALLOWED_COMMANDS,
    WORKER_UID,
    producer_database_url,
    start_default_worker,
    start_worker,
    wait_for_log,
)
from harness.logins import CODEX_HOME, FAKE_API_KEY, JOB_IMAGE, api_key_login, run_in_volume
from moonmind_codex.producer.router import route_key
from moonmind_codex.settings import Settings
from moonmind_codex.store.audit import read_records
from moonmind_codex.store.runstore import RunStore
from moonmind_codex.worker.celery_app import CODEX_PHASE_TASK, PING_TASK, create_app
from moonmind_codex.worker.request import (
    CodexPhaseBlocked,
    CodexPhaseFailed,
    CodexPhaseMisrouted,
    PhaseRequestError,
)
from tests.integration.conftest import unique

SHARDS = 3
LOGGED_IN = (0, 1)  # shard 2's volume exists but is not signed in


@dataclass
class Fleet:
    url: str
    tag: str
    state: Path
    producer: Settings
    workers: dict[int, Any]

    def volume(self, shard: int) -> str:
        return f"mmc-test-{self.tag}-auth-{shard}"

    def key_for(self, shard: int, shard_count: int = SHARDS) -> str:
        settings = Settings(shard_count=shard_count)
        return next(
            k
            for k in (f"org/repo-{i}" for i in range(1000))
            if route_key(k, settings).queue == f"codex-{shard}"
        )

    def key_leaving_on_growth(self, shard: int, grown: Settings, prefix: str) -> str:
        """A key of ``shard`` in this fleet that a grown fleet would route elsewhere."""
        queue = f"codex-{shard}"
        return next(
            k
            for k in (f"{prefix}/repo-{i}" for i in range(2000))
            if route_key(k, self.producer).queue == queue and route_key(k, grown).queue != queue
        )

    def audit(self) -> list[dict[str, Any]]:
        return read_records(self.state / "audit" / "codex-audit.jsonl")


@pytest.fixture(scope="module")
def fleet(client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tag = secrets.token_hex(3)
    work = tmp_path_factory.mktemp("fleet")
    state = work / "state"
    state.mkdir()
    os.chown(state, WORKER_UID, WORKER_UID)
    with running_broker(client, work) as url:
        url_file = work / "broker_url"
        url_file.write_text(url)
        url_file.chmod(0o444)
        volumes = [client.volumes.create(f"mmc-test-{tag}-auth-{n}") for n in range(SHARDS)]
        for n in range(SHARDS):
            if n in LOGGED_IN:
                api_key_login(volumes[n].name)
            else:  # provisioned (owner and mode) but never signed in
                run_in_volume(volumes[n].name, "true")
        workers: dict[int, Any] = {}
        default_worker = None
        try:
            for n in range(SHARDS):
                workers[n] = start_worker(
                    client, tag, url_file, state, n, f"mmc-test-{tag}-worker-{n}", volumes[n].name
                )
            for container in workers.values():
                logs = wait_for_log(container, " ready.")
                assert " ready." in logs, logs[-3000:]
            producer = Settings(
                broker_url=url,
                shard_count=SHARDS,
                database_url=producer_database_url(state),
            )
            # A plain default-queue worker, for the non-Codex task.
            default_worker = start_default_worker(url, producer_database_url(state), "default@e2e")
            yield Fleet(url=url, tag=tag, state=state, producer=producer, workers=workers)
        finally:
            if default_worker is not None:
                default_worker.terminate()
                default_worker.wait(timeout=30)
            for container in workers.values():
                container.remove(force=True)
            for volume in volumes:
                volume.remove(force=True)
            for leftover in client.volumes.list(filters={"name": f"mmc-test-{tag}-"}):
                leftover.remove(force=True)


def send_phase(app: Any, run_id: str, phase: str, repository: str, command: list[str]) -> Any:
    return app.send_task(
        CODEX_PHASE_TASK,
        kwargs={"run_id": run_id, "phase": phase, "repository": repository, "command": command},
    )


def test_codex_tasks_run_on_the_shard_that_owns_the_volume(fleet: Fleet) -> None:
    app = create_app(fleet.producer)
    script = "id -u; codex login status; ls /var/run/docker.sock 2>&1 || true"
    for shard in LOGGED_IN:
        key = fleet.key_for(shard)
        result = send_phase(
            app, f"run-route-{shard}-{fleet.tag}", "specify", key, ["sh", "-c", script]
        ).get(timeout=90)
        assert result["queue"] == route_key(key, fleet.producer).queue == f"codex-{shard}"
        assert (result["shard"], result["volume"]) == (shard, fleet.volume(shard))
        assert result["worker"] == f"codex-{shard}@e2e-host"
        assert (result["outcome"], result["preflight_status"]) == ("succeeded", "ok")
        log = fleet.state / Path(result["log_path"]).relative_to("/var/lib/moonmind-codex")
        text = log.read_text()
        assert text.splitlines()[0] == "1000"
        assert "API key configured" in text
        assert "No such file or directory" in text  # no Docker socket in the job


def test_non_codex_task_stays_on_the_default_queue(fleet: Fleet) -> None:
    app = create_app(fleet.producer)
    pending = app.send_task(PING_TASK, args=["hello"])
    result = pending.get(timeout=60)
    assert result == {"value": "hello", "worker": "default@e2e", "queue": "celery"}
    for container in fleet.workers.values():
        assert pending.id not in container.logs().decode("utf-8", "replace"), container.name


def test_sticky_run_keeps_its_queue_after_the_fleet_grew(fleet: Fleet) -> None:
    store = RunStore.open(fleet.producer.database_url)
    small = fleet.producer
    grown = small.with_overrides(shard_count=8)
    key = fleet.key_leaving_on_growth(0, grown, "sticky")
    run_id = f"run-sticky-{fleet.tag}"
    first = send_phase(create_app(small, store), run_id, "specify", key, ["true"]).get(timeout=90)
    second = send_phase(create_app(grown, store), run_id, "plan", key, ["true"]).get(timeout=90)
    assert first["queue"] == second["queue"] == "codex-0"
    assert first["volume"] == second["volume"] == fleet.volume(0)


def test_queue_header_keeps_a_run_on_its_queue_across_producers(fleet: Fleet) -> None:
    """Two producer hosts with no shared store: the second carries the first result's queue."""
    small = fleet.producer
    grown = small.with_overrides(shard_count=8)
    key = fleet.key_leaving_on_growth(1, grown, "carried")
    run_id = f"run-carried-{fleet.tag}"
    first = send_phase(create_app(small, sticky=False), run_id, "specify", key, ["true"])
    first_result = first.get(timeout=90)
    second = create_app(grown, sticky=False).send_task(
        CODEX_PHASE_TASK,
        kwargs={"run_id": run_id, "phase": "plan", "repository": key, "command": ["true"]},
        headers={"moonmind_codex_queue": first_result["queue"]},
    )
    second_result = second.get(timeout=90)
    assert first_result["queue"] == second_result["queue"] == "codex-1"
    assert second_result["volume"] == fleet.volume(1)


def test_n_phases_leave_exactly_2n_audit_records(fleet: Fleet) -> None:
    app = create_app(fleet.producer)
    run_ids = [f"run-audit-{i}-{fleet.tag}" for i in range(4)]
    pending = [
        send_phase(app, run_id, "specify", fleet.key_for(i % 2), ["true"])
        for i, run_id in enumerate(run_ids)
    ]
    for result in pending:
        assert result.get(timeout=120)["outcome"] == "succeeded"
    records = [r for r in fleet.audit() if r["run_id"] in run_ids]
    assert len(records) == 2 * len(run_ids)
    assert {r["shard"] for r in records} == {0, 1}
    for run_id in run_ids:
        mine = [r for r in records if r["run_id"] == run_id]
        assert [r["event"] for r in mine] == ["codex_phase_started", "codex_phase_finished"]
        start, end = mine
        for field in ("queue", "shard", "volume", "host", "worker", "task_id"):
            assert start[field] not in (None, "") and start[field] == end[field], (field, start)
        assert start["timestamp"] and start["outcome"] is None
        for field in (
            "queue",
            "shard",
            "volume",
            "host",
            "worker",
            "container_id",
            "preflight_status",
            "outcome",
            "duration_s",
        ):
            assert end[field] not in (None, ""), (field, end)
        assert end["volume"] == fleet.volume(end["shard"]) and end["host"] == "e2e-host"
        assert end["queue"] == f"codex-{end['shard']}"


def hold_lock(client: Any, volume: str, seconds: int) -> Any:
    """A container holding ``volume``'s job lock until released (``release``), at most
    ``seconds``, through the image's entry point as `moonmind-codex login` would; labelled with
    the volume, as the fix text says."""
    held = (
        f"echo holding; i=0; until [ -e /tmp/release ] || [ $i -ge {seconds * 10} ]; "
        "do sleep 0.1; i=$((i+1)); done"
    )
    return client.containers.run(
        JOB_IMAGE,
        ["sh", "-c", held],
        name=unique("lock-holder"),
        user="1000:1000",
        network_mode="none",
        volumes={volume: {"bind": CODEX_HOME, "mode": "rw"}},
        labels={"io.moonmind.codex.volume": volume},
        detach=True,
    )


def release(holder: Any) -> None:
    done = holder.exec_run(["touch", "/tmp/release"])
    assert done.exit_code == 0, done.output


def test_phase_on_a_held_volume_waits_for_the_lock_then_runs(fleet: Fleet, client: Any) -> None:
    """An operator's login holds the volume: the phase is retried, not failed, and then runs."""
    volume = fleet.volume(0)
    # Through the job image's entry point, like `moonmind-codex login`: it takes the lock.
    holder = hold_lock(client, volume, seconds=300)
    run_id = f"run-busy-{fleet.tag}"
    try:
        wait_for_log(holder, "holding", timeout_s=30)
        pending = send_phase(
            create_app(fleet.producer), run_id, "specify", fleet.key_for(0), ["true"]
        )
        # The holder lets go only once the phase has met the lock (a busy record), so the
        # phase is proved to wait however slowly it arrives.
        deadline = time.monotonic() + 120
        while not [
            r for r in fleet.audit() if r["run_id"] == run_id and r.get("outcome") == "busy"
        ]:
            assert time.monotonic() < deadline, "the phase never met the held lock"
            time.sleep(0.2)
        release(holder)
        result = pending.get(timeout=120)
        holder.reload()
        assert holder.status == "exited"  # the phase ran only after the holder let go
    finally:
        holder.remove(force=True)
    assert (result["outcome"], result["volume"]) == ("succeeded", volume)
    ends = [
        r for r in fleet.audit() if r["run_id"] == run_id and r["event"] == "codex_phase_finished"
    ]
    outcomes = [r["outcome"] for r in ends]
    assert outcomes[-1] == "succeeded" and set(outcomes[:-1]) == {"busy"}, outcomes
    assert len({r["task_id"] for r in ends}) == 1  # retries of one task, not new tasks


def test_a_volume_held_past_every_retry_fails_the_phase_with_the_holder_to_look_for(
    fleet: Fleet, client: Any
) -> None:
    volume = fleet.volume(1)
    holder = hold_lock(client, volume, seconds=600)
    run_id = f"run-busy-out-{fleet.tag}"
    try:
        wait_for_log(holder, "holding", timeout_s=30)
        with pytest.raises(CodexPhaseFailed) as caught:
            send_phase(
                create_app(fleet.producer), run_id, "specify", fleet.key_for(1), ["true"]
            ).get(timeout=180)
        holder.reload()
        assert holder.status == "running"  # the holder was never disturbed
    finally:
        holder.remove(force=True)
    message = str(caught.value)
    assert f"stayed busy through {BUSY_MAX_RETRIES} retries" in message, message
    assert f"docker ps --filter label=io.moonmind.codex.volume={volume}" in message
    assert "MOONMIND_CODEX_BUSY_MAX_RETRIES" in message
    ends = [
        r for r in fleet.audit() if r["run_id"] == run_id and r["event"] == "codex_phase_finished"
    ]
    # The first delivery and every retry met the lock; no job ever ran its command.
    assert [r["outcome"] for r in ends] == ["busy"] * (BUSY_MAX_RETRIES + 1)


@pytest.mark.parametrize(
    ("command", "timeout_s", "outcome", "said"),
    [
        (["sh", "-c", "echo working; exit 3"], None, "failed", "failed with exit code 3"),
        # 8 s: the timeout also covers the in-job pre-flight, which under load can take
        # seconds before the command prints; still far below the command's 60 s.
        (["sh", "-c", "echo working; sleep 60"], 8, "timed_out", "timed out"),
    ],
    ids=["failed", "timed-out"],
)
def test_failed_and_timed_out_phases_reach_the_producer_through_the_broker(
    fleet: Fleet, command: list[str], timeout_s: float | None, outcome: str, said: str
) -> None:
    app = create_app(fleet.producer)
    run_id = f"run-{outcome.replace('_', '-')}-{fleet.tag}"
    kwargs: dict[str, Any] = {"run_id": run_id, "phase": "implement", "command": command}
    if timeout_s is not None:
        kwargs["timeout_s"] = timeout_s
    kwargs["repository"] = fleet.key_for(0)
    started = time.monotonic()
    with pytest.raises(CodexPhaseFailed) as caught:
        app.send_task(CODEX_PHASE_TASK, kwargs=kwargs).get(timeout=120)
    message = str(caught.value)
    assert f"phase implement of run {run_id} {said}" in message, message
    assert f"volume {fleet.volume(0)}" in message and "log: " in message
    if timeout_s is not None:
        assert time.monotonic() - started < 50  # killed at its timeout, not at the end
    [end] = [
        r for r in fleet.audit() if r["run_id"] == run_id and r["event"] == "codex_phase_finished"
    ]
    assert end["outcome"] == outcome
    assert end["exit_code"] == (3 if outcome == "failed" else None)
    log = fleet.state / "artifacts" / "spec_workflows" / run_id / "implement.log"
    assert log.read_text().startswith("working\n")


def test_a_command_off_the_allowlist_is_refused_before_anything_starts(
    fleet: Fleet, client: Any
) -> None:
    """Holding the broker password is not enough to read a login with a shell."""
    run_id = f"run-policy-{fleet.tag}"
    steal = ["python3", "-c", "print(open('/home/app/.codex/auth.json').read())"]
    with watching_engine() as events:
        with pytest.raises(PhaseRequestError) as caught:
            send_phase(create_app(fleet.producer), run_id, "specify", fleet.key_for(0), steal).get(
                timeout=90
            )
        started = events.containers({"io.moonmind.codex.run-id": run_id})
    message = str(caught.value)
    assert "command 'python3' is not allowed on this worker" in message, message
    assert f"MOONMIND_CODEX_ALLOWED_COMMANDS allows {', '.join(TEST_ALLOWED_COMMANDS)}" in message
    # Nothing started: no container, no phase record, no log; the audit log holds the refusal.
    assert started == []
    records = [r for r in fleet.audit() if r["run_id"] == run_id]
    assert [(r["event"], r["phase"], r["shard"]) for r in records] == [
        ("codex_task_refused", "specify", 0)
    ]
    assert "MOONMIND_CODEX_ALLOWED_COMMANDS" in records[0]["reason"]
    assert not (fleet.state / "artifacts" / "spec_workflows" / run_id).exists()


def test_phase_on_a_volume_without_login_is_blocked(fleet: Fleet, client: Any) -> None:
    app = create_app(fleet.producer)
    run_id = f"run-blocked-{fleet.tag}"
    with watching_engine() as watch:
        with pytest.raises(CodexPhaseBlocked) as caught:
            send_phase(app, run_id, "specify", fleet.key_for(2), ["sh", "-c", "exit 0"]).get(
                timeout=90
            )
        # The engine's own record: one job container, whose entry point checked the login
        # first and ended with BLOCKED (2); the command (which would have exited 0) never ran.
        # (The run's workspace volume is prepared first by a container of its own, role
        # "workspace", which runs no command of the run and mounts no login.)
        events = watch.containers(
            {"io.moonmind.codex.run-id": run_id, "io.moonmind.codex.role": "job"}
        )
    assert [e["status"] for e in events if e["status"] in ("create", "start")] == [
        "create",
        "start",
    ]
    assert [e["Actor"]["Attributes"]["exitCode"] for e in events if e["status"] == "die"] == ["2"]
    message = str(caught.value)
    for part in (
        "shard 2",
        fleet.volume(2),
        "host e2e-host",
        "not logged in",
        "moonmind-codex login --shard 2",
    ):
        assert part in message
    end = [r for r in fleet.audit() if r["run_id"] == run_id][-1]
    assert (end["outcome"], end["preflight_status"], end["container_id"]) == (
        "blocked",
        "blocked",
        None,
    )
    # The phase log says why, in the same words.
    log = fleet.state / "artifacts" / "spec_workflows" / run_id / "specify.log"
    assert "moonmind-codex login --shard 2" in log.read_text()


def test_worker_without_its_volume_refuses_to_start(
    fleet: Fleet, client: Any, tmp_path: Path
) -> None:
    url_file = tmp_path / "url"
    url_file.write_text(fleet.url)
    url_file.chmod(0o444)
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, WORKER_UID, WORKER_UID)
    container = start_worker(
        client, f"{fleet.tag}-missing", url_file, state, 0, f"mmc-test-{fleet.tag}-noworker", "none"
    )
    try:
        assert container.wait(timeout=60)["StatusCode"] == 78
        logs = container.logs().decode()
        assert f"auth volume mmc-test-{fleet.tag}-missing-auth-0 for shard 0 does not exist" in logs
        assert "never falls back to an ephemeral volume" in logs
    finally:
        container.remove(force=True)


def test_second_worker_on_a_held_volume_refuses_and_names_the_holder(
    fleet: Fleet, client: Any, tmp_path: Path
) -> None:
    url_file = tmp_path / "url"
    url_file.write_text(fleet.url)
    url_file.chmod(0o444)
    first = fleet.workers[0]
    first.reload()
    started_at = first.attrs["State"]["StartedAt"]
    container = start_worker(
        client, fleet.tag, url_file, fleet.state, 0, f"mmc-test-{fleet.tag}-dup-0", fleet.volume(0)
    )
    try:
        assert container.wait(timeout=60)["StatusCode"] == 78
        logs = container.logs().decode()
        assert f"auth volume {fleet.volume(0)} is already used by worker {first.name}" in logs
    finally:
        container.remove(force=True)
    # The holder, as the engine sees it now: still running, never stopped or restarted ...
    first.reload()
    assert first.attrs["State"]["Running"] is True, first.attrs["State"]
    assert first.attrs["State"]["StartedAt"] == started_at, first.attrs["State"]
    # ... and still the one that serves the shard.
    result = send_phase(
        create_app(fleet.producer), f"run-dup-{fleet.tag}", "specify", fleet.key_for(0), ["true"]
    ).get(timeout=90)
    assert (result["worker"], result["outcome"]) == ("codex-0@e2e-host", "succeeded")


def test_single_queue_mode_uses_one_codex_queue(fleet: Fleet, client: Any, tmp_path: Path) -> None:
    tag = f"{fleet.tag}-single"
    volume = client.volumes.create(f"mmc-test-{tag}-auth-0")
    url_file = tmp_path / "url"
    url_file.write_text(fleet.url)
    url_file.chmod(0o444)
    worker = None
    try:
        api_key_login(volume.name)
        worker = start_worker(
            client,
            tag,
            url_file,
            fleet.state,
            0,
            f"mmc-test-{tag}-worker",
            volume.name,
            # Its own host name: Celery node names (codex-N@host) must be unique.
            {"MOONMIND_CODEX_QUEUE_MODE": "single", "MOONMIND_CODEX_HOST_NAME": "e2e-single"},
        )
        logs = wait_for_log(worker, " ready.")
        assert (
            ".> codex " in logs or ".> codex\t" in logs or "codex            exchange=codex" in logs
        ), logs[-2000:]
        producer = fleet.producer.with_overrides(queue_mode="single")
        result = send_phase(
            create_app(producer), f"run-single-{tag}", "specify", "any/repo", ["true"]
        ).get(timeout=90)
        assert (result["queue"], result["volume"], result["outcome"]) == (
            "codex",
            volume.name,
            "succeeded",
        )
    finally:
        if worker is not None:
            worker.remove(force=True)
        volume.remove(force=True)


def worker_log_entries(container: Any, until_run: str, timeout_s: float = 30) -> list[Any]:
    """The worker's stderr as JSON objects, once it shows ``until_run``'s final audit record."""
    deadline = time.monotonic() + timeout_s
    while True:
        err = container.logs(stdout=False, stderr=True).decode("utf-8", "replace")
        entries = [json.loads(line) for line in err.splitlines() if line.strip()]
        if any(
            e.get("audit", {}).get("run_id") == until_run
            and e["audit"]["event"] == "codex_phase_finished"
            for e in entries
        ):
            return entries
        assert time.monotonic() < deadline, (until_run, err[-2000:])
        time.sleep(0.2)


def test_worker_logs_are_json_lines_without_secrets(fleet: Fleet) -> None:
    password = fleet.url.split(":")[2].split("@")[0]
    app = create_app(fleet.producer)
    # One phase per shard, so that every worker has records of its own to show in both places
    # (shard 2's is refused: its volume has no login).
    run_ids = {shard: f"run-logs-{shard}-{fleet.tag}" for shard in range(SHARDS)}
    for shard, run_id in run_ids.items():
        pending = send_phase(app, run_id, "specify", fleet.key_for(shard), ["true"])
        if shard in LOGGED_IN:
            assert pending.get(timeout=90)["outcome"] == "succeeded"
        else:
            with pytest.raises(CodexPhaseBlocked):
                pending.get(timeout=90)
    for shard, container in fleet.workers.items():
        # stderr carries the logging output; stdout carries Celery's start-up banner.
        entries = worker_log_entries(container, run_ids[shard])
        startup = [e for e in entries if e.get("msg", "").startswith("start-up pre-flight: ")]
        assert len(startup) == 1, entries[-20:]
        result = json.loads(startup[0]["msg"].removeprefix("start-up pre-flight: "))
        expected = "ok" if shard in LOGGED_IN else "blocked"
        assert (result["shard"], result["volume"], result["status"]) == (
            shard,
            fleet.volume(shard),
            expected,
        )
        everything = container.logs().decode("utf-8", "replace")
        assert password not in everything and FAKE_API_KEY not in everything
        # The log carries the same audit records as the JSONL file, as objects: this shard's
        # run in both, with its start and its end, and no other shard's run.
        logged = [e["audit"] for e in entries if "audit" in e]
        filed = [r for r in fleet.audit() if r["worker"] == f"codex-{shard}@e2e-host"]
        assert logged == filed, (shard, len(logged), len(filed))
        mine = [r for r in filed if r["run_id"] == run_ids[shard]]
        assert [(r["event"], r["outcome"]) for r in mine] == [
            ("codex_phase_started", None),
            ("codex_phase_finished", "succeeded" if shard in LOGGED_IN else "blocked"),
        ]
        others = set(run_ids.values()) - {run_ids[shard]}
        assert not others & {r["run_id"] for r in filed}, shard


def test_misrouted_phase_is_refused_untouched(fleet: Fleet) -> None:
    """A codex-0 message that reaches codex-1's queue (a stray binding) is not run there."""
    stray = f"mmc-test-stray-{fleet.tag}"
    conn: Any = Connection(fleet.url)  # type: ignore[no-untyped-call]
    try:
        binding: Any = Queue(  # type: ignore[no-untyped-call]
            "codex-1",
            Exchange(stray, type="direct", durable=False),  # type: ignore[no-untyped-call]
            routing_key="codex-0",
        )
        binding.bind(conn.default_channel).declare()
    finally:
        conn.release()
    run_id = f"run-misrouted-{fleet.tag}"
    app = create_app(fleet.producer, sticky=False)
    pending = app.send_task(
        CODEX_PHASE_TASK,
        kwargs={"run_id": run_id, "phase": "specify", "command": ["true"], "affinity_key": "x"},
        exchange=stray,
        routing_key="codex-0",
    )
    with pytest.raises(CodexPhaseMisrouted) as caught:
        pending.get(timeout=60)
    assert "arrived on queue codex-0, but this worker serves codex-1" in str(caught.value)
    assert [r for r in fleet.audit() if r["run_id"] == run_id] == []
    assert not (fleet.state / "artifacts" / "spec_workflows" / run_id).exists()


def test_enqueue_command_through_the_broker(fleet: Fleet, tmp_path: Path) -> None:
    url_file = tmp_path / "url"
    url_file.write_text(fleet.url)
    env = dict(
        os.environ,
        MOONMIND_CODEX_BROKER_URL_FILE=str(url_file),
        MOONMIND_CODEX_SHARD_COUNT=str(SHARDS),
        MOONMIND_CODEX_DATABASE_URL=f"sqlite:///{tmp_path / 'runs.sqlite3'}",
    )
    cli = [sys.executable, "-m", "moonmind_codex", "enqueue", "--phase", "specify", "--wait"]
    ok = subprocess.run(
        [*cli, "--run-id", f"run-cli-{fleet.tag}", "--repository", fleet.key_for(1), "--", "id"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    result = json.loads(ok.stdout)
    assert (result["queue"], result["volume"], result["outcome"]) == (
        "codex-1",
        fleet.volume(1),
        "succeeded",
    )
    blocked = subprocess.run(
        [
            *cli,
            "--run-id",
            f"run-blocked-cli-{fleet.tag}",
            "--repository",
            fleet.key_for(2),
            "--",
            "true",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert blocked.returncode == 1 and blocked.stdout == ""
    # The worker's verdict and its fix, not a traceback.
    assert "Traceback" not in blocked.stderr, blocked.stderr
    assert "CodexPhaseBlocked" in blocked.stderr and fleet.volume(2) in blocked.stderr
    assert "Fix: on host e2e-host" in blocked.stderr
    assert "moonmind-codex login --shard 2" in blocked.stderr
    assert fleet.url.split(":")[2].split("@")[0] not in ok.stdout + ok.stderr + blocked.stderr
