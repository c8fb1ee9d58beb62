"""Runs through a real RabbitMQ and real worker containers: chains, records, retry, cancel, faults.

A small fleet of its own (two signed-in shards and a default-queue worker), so that restarting
the broker or killing a worker cannot disturb the other end-to-end tests.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.broker import broker_container, running_broker
from harness.engine import EngineEvents, watching_engine
from harness.fleet import (
    WORKER_UID,
    RecordedFleet,
    producer_database_url,
    start_default_worker,
    start_worker,
    wait_for_log,
    workspace_prefix,
)
from harness.logins import JOB_IMAGE, api_key_login
from moonmind_codex.engine.jobs import job_container_name
from moonmind_codex.producer.submit import cancel_run, retry_run, submit_run
from moonmind_codex.settings import Settings
from moonmind_codex.store.runstore import RunStore
from moonmind_codex.worker.celery_app import create_app

SHARDS = 2


@dataclass
class RunFleet(RecordedFleet):
    url: str
    state: Path
    workers: dict[int, Any]
    broker: Any

    def workspace_file(self, path: str) -> str:
        """``<run id>/<file>`` in that run's workspace volume ("" when missing)."""
        run_id = path.split("/", 1)[0]
        return self.in_workspace(run_id, f"cat /work/{path} || true", if_missing="")

    def write_workspace(self, path: str) -> None:
        run_id = path.split("/", 1)[0]
        self.in_workspace(run_id, f"mkdir -p $(dirname /work/{path}) && touch /work/{path}")


@pytest.fixture(scope="module")
def fleet(client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunFleet]:
    tag = secrets.token_hex(3)
    work = tmp_path_factory.mktemp("runfleet")
    state = work / "state"
    state.mkdir()
    os.chown(state, WORKER_UID, WORKER_UID)
    workspace = workspace_prefix(tag)
    with running_broker(client, work) as url:
        broker = broker_container(client, url)
        url_file = work / "broker_url"
        url_file.write_text(url)
        url_file.chmod(0o444)
        volumes = [client.volumes.create(f"mmc-test-{tag}-auth-{n}") for n in range(SHARDS)]
        for volume in volumes:
            api_key_login(volume.name)
        workers: dict[int, Any] = {}
        default_worker = None
        try:
            for n in range(SHARDS):
                workers[n] = start_worker(
                    client,
                    tag,
                    url_file,
                    state,
                    n,
                    f"mmc-test-{tag}-rworker-{n}",
                    volumes[n].name,
                    shard_count=SHARDS,
                )
            for container in workers.values():
                logs = wait_for_log(container, " ready.")
                assert " ready." in logs, logs[-3000:]
            producer = Settings(
                broker_url=url, shard_count=SHARDS, database_url=producer_database_url(state)
            )
            default_worker = start_default_worker(
                url,
                producer_database_url(state),
                "default@runs",
                {"MOONMIND_CODEX_SHARD_COUNT": str(SHARDS)},
            )
            yield RunFleet(
                url=url,
                tag=tag,
                state=state,
                producer=producer,
                store=RunStore.open(producer.database_url),
                workers=workers,
                broker=broker,
                workspace=workspace,
            )
        finally:
            if default_worker is not None:
                default_worker.terminate()
                default_worker.wait(timeout=30)
            for container in workers.values():
                container.remove(force=True)
            for leftover in client.volumes.list(filters={"name": f"mmc-test-{tag}-"}):
                leftover.remove(force=True)


def submit(fleet: RunFleet, definition: dict[str, Any]) -> str:
    app = create_app(fleet.producer, fleet.store)
    return submit_run(app, definition, fleet.producer, fleet.store)


def test_a_run_of_codex_and_ordinary_phases_completes_and_is_recorded(fleet: RunFleet) -> None:
    run_id = fleet.run_id("ok")
    repository = fleet.repository_on(1)
    submit(
        fleet,
        {
            "run_id": run_id,
            "repository": repository,
            "phases": [
                {"name": "specify", "command": ["sh", "-c", "echo specify >> marker"]},
                {"name": "plan", "command": ["sh", "-c", "echo plan >> marker; printf done"]},
                {"name": "notify", "task": "moonmind_codex.ping", "kwargs": {"value": 7}},
            ],
        },
    )
    fleet.expect_status(run_id, "succeeded")
    assert fleet.phases(run_id) == [
        ("specify", 1, "succeeded"),
        ("plan", 1, "succeeded"),
        ("notify", 1, "succeeded"),
    ]
    record = fleet.store.get_run(run_id)
    assert record is not None and record.chain_id
    assert (record.queue, record.shard, record.volume, record.host) == (
        "codex-1",
        1,
        fleet.volume(1),
        "e2e-host",
    )
    assert fleet.workspace_file(f"{run_id}/marker").split() == ["specify", "plan"]
    plan = next(a for a in fleet.store.attempts(run_id) if a.phase == "plan")
    log = fleet.state / Path(plan.log_path or "").relative_to("/var/lib/moonmind-codex")
    assert log.read_text().endswith("done")  # the last line, without a newline, is kept


def test_a_failing_middle_phase_then_retry_skips_finished_phases(fleet: RunFleet) -> None:
    run_id = fleet.run_id("retry")
    submit(
        fleet,
        {
            "run_id": run_id,
            "repository": fleet.repository_on(0),
            "phases": [
                {"name": "a", "command": ["sh", "-c", "echo a >> marker"]},
                {"name": "b", "command": ["sh", "-c", "test -f fixed || exit 3"]},
                {"name": "c", "command": ["sh", "-c", "echo c >> marker"]},
            ],
        },
    )
    fleet.expect_status(run_id, "failed")
    assert fleet.phases(run_id) == [
        ("a", 1, "succeeded"),
        ("b", 1, "failed"),
        ("c", 1, "pending"),
    ]
    fleet.write_workspace(f"{run_id}/fixed")
    app = create_app(fleet.producer, fleet.store)
    assert retry_run(app, run_id, fleet.producer, fleet.store) == run_id
    fleet.expect_status(run_id, "succeeded")
    assert fleet.phases(run_id) == [
        ("a", 1, "succeeded"),
        ("b", 1, "failed"),
        ("b", 2, "succeeded"),
        ("c", 1, "succeeded"),
    ]
    assert fleet.workspace_file(f"{run_id}/marker").split() == ["a", "c"]  # a ran once
    # Nothing left to resume: a second retry sends nothing.
    assert retry_run(app, run_id, fleet.producer, fleet.store) is None


def test_a_blocked_run_resumes_after_the_login_is_fixed(fleet: RunFleet, client: Any) -> None:
    volume = fleet.volume(0)

    def chmod_auth(mode: str) -> None:
        subprocess.run(
            [
                "docker",
                "run",
                "--rm",
                "--network",
                "none",
                "--user",
                "0:0",
                "--entrypoint",
                "chmod",
                "-v",
                f"{volume}:/home/app/.codex",
                JOB_IMAGE,
                mode,
                "/home/app/.codex/auth.json",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )

    run_id = fleet.run_id("blocked")
    chmod_auth("0644")  # the pre-flight blocks on a world-readable login
    try:
        submit(
            fleet,
            {
                "run_id": run_id,
                "repository": fleet.repository_on(0),
                "phases": [
                    {"name": "first", "command": ["sh", "-c", "echo first >> marker"]},
                    {"name": "second", "command": ["true"]},
                ],
            },
        )
        fleet.expect_status(run_id, "blocked")
    finally:
        chmod_auth("0600")
    record = fleet.store.get_run(run_id)
    assert record is not None and record.preflight_status == "blocked"
    assert "moonmind-codex repair --shard 0" in (record.preflight_message or "")
    assert fleet.workspace_file(f"{run_id}/marker") == ""  # no Codex command ran
    retry_run(create_app(fleet.producer, fleet.store), run_id, fleet.producer, fleet.store)
    fleet.expect_status(run_id, "succeeded")
    assert fleet.workspace_file(f"{run_id}/marker").split() == ["first"]


def test_cancel_stops_the_running_job_and_sends_no_later_phase(
    fleet: RunFleet, client: Any
) -> None:
    run_id = fleet.run_id("cancel")
    submit(
        fleet,
        {
            "run_id": run_id,
            "repository": fleet.repository_on(1),
            "phases": [
                {"name": "long", "command": ["sh", "-c", "echo started >> marker; sleep 120"]},
                {"name": "after", "command": ["sh", "-c", "echo after >> marker"]},
            ],
        },
    )
    name = job_container_name(run_id, "long")
    wait_until(lambda: bool(client.containers.list(filters={"name": name})), 180)
    began = time.monotonic()
    cancel_run(create_app(fleet.producer, fleet.store), run_id, fleet.store)
    wait_until(lambda: not client.containers.list(all=True, filters={"name": name}), 30)
    assert time.monotonic() - began < 30
    assert fleet.wait_status(run_id, {"cancelled"}) == "cancelled"
    # Final records: even a delivery of "after" that escaped the revoke would start nothing.
    assert fleet.phases(run_id) == [("long", 1, "cancelled"), ("after", 1, "cancelled")]
    assert fleet.workspace_file(f"{run_id}/marker").split() == ["started"]


def wait_until(condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)


def job_starts(events: EngineEvents, name: str) -> list[str]:
    """Ids of the containers named ``name`` the engine created while ``events`` watched."""
    return [
        e["Actor"]["ID"]
        for e in events.settle()
        if e.get("Type") == "container"
        and e.get("Action") == "create"
        and e["Actor"]["Attributes"].get("name") == name
    ]


# A phase that holds on until the test lets it end (a bounded wait on a file in its workspace
# directory; still held after 120 s it fails), so a restart lands while the job runs.
HELD = (
    "i=0; until [ -e release ] || [ $i -ge 1200 ]; do sleep 0.1; i=$((i+1)); done; [ -e release ]"
)


def ready_lines(container: Any, text: bytes) -> int:
    return bytes(container.logs()).count(text)


def test_broker_restart_during_a_phase_runs_the_job_once_and_completes(
    fleet: RunFleet, client: Any
) -> None:
    run_id = fleet.run_id("broker")
    with watching_engine() as events:
        submit(
            fleet,
            {
                "run_id": run_id,
                "repository": fleet.repository_on(0),
                "phases": [
                    {"name": "slow", "command": ["sh", "-c", f"echo ran >> marker; {HELD}"]},
                    {"name": "next", "command": ["sh", "-c", "echo next >> marker"]},
                ],
            },
        )
        name = job_container_name(run_id, "slow")
        wait_until(lambda: bool(client.containers.list(filters={"name": name})), 180)
        ready = b"moonmind-codex-broker: ready;"
        readies = ready_lines(fleet.broker, ready)
        fleet.broker.restart(timeout=10)
        wait_until(lambda: ready_lines(fleet.broker, ready) > readies, 120)
        assert client.containers.list(filters={"name": name}), "the job ended during the restart"
        fleet.write_workspace(f"{run_id}/release")
        fleet.expect_status(run_id, "succeeded", 360)
        assert fleet.workspace_file(f"{run_id}/marker").split() == ["ran", "next"]
        assert len(job_starts(events, name)) == 1  # one job container, ever


def test_worker_killed_during_a_phase_runs_the_job_once_and_completes(
    fleet: RunFleet, client: Any
) -> None:
    run_id = fleet.run_id("kill")
    with watching_engine() as events:
        submit(
            fleet,
            {
                "run_id": run_id,
                "repository": fleet.repository_on(1),
                "phases": [
                    {"name": "slow", "command": ["sh", "-c", f"echo ran >> marker; {HELD}"]}
                ],
            },
        )
        name = job_container_name(run_id, "slow")
        wait_until(lambda: bool(client.containers.list(filters={"name": name})), 180)
        worker = fleet.workers[1]
        readies = ready_lines(worker, b" ready.")
        worker.kill(signal=signal.SIGKILL)
        worker.start()  # as systemd would
        # The restarted worker consumes again (its log says ready once more) while the job it
        # left behind still runs.
        wait_until(lambda: ready_lines(worker, b" ready.") > readies, 120)
        assert client.containers.list(filters={"name": name}), "the job ended before the restart"
        fleet.write_workspace(f"{run_id}/release")
        fleet.expect_status(run_id, "succeeded", 360)
        assert fleet.workspace_file(f"{run_id}/marker").split() == ["ran"]
        assert len(job_starts(events, name)) == 1


@pytest.mark.parametrize("how", ["remote shutdown", "docker stop"])
def test_a_worker_that_stops_consuming_exits_non_zero_unless_an_operator_stopped_it(
    fleet: RunFleet, client: Any, how: str
) -> None:
    tag = f"{fleet.tag}q{secrets.token_hex(2)}"
    volume = client.volumes.create(f"mmc-test-{tag}-auth-0")
    url_file = fleet.state.parent / "broker_url"
    name = f"mmc-test-{tag}-quiet"
    worker = start_worker(
        client,
        tag,
        url_file,
        fleet.state,
        0,
        name,
        volume.name,
        # Remote control is off by default (docs/security.md); this worker opts in so that a
        # remote shutdown, the quiet stop the unit must catch, can reach it.
        extra_env={
            "MOONMIND_CODEX_HOST_NAME": f"quiet-{tag}",
            "MOONMIND_CODEX_REMOTE_CONTROL": "true",
        },
        shard_count=SHARDS,
    )
    try:
        assert " ready." in wait_for_log(worker, " ready.")
        if how == "remote shutdown":
            # With remote control on, anyone with broker access can do this; the unit must
            # restart such a worker.
            app = create_app(fleet.producer.with_overrides(remote_control=True), fleet.store)
            app.control.shutdown(destination=[f"codex-0@quiet-{tag}"])
        else:
            worker.stop(timeout=30)
        status = worker.wait(timeout=90)["StatusCode"]
        assert status == (69 if how == "remote shutdown" else 0), worker.logs()[-2000:]
    finally:
        worker.remove(force=True)
        volume.remove(force=True)


def test_a_host_application_submits_a_run_and_publishes_with_the_hook(
    fleet: RunFleet, tmp_path: Path
) -> None:
    out = tmp_path / "published.json"
    env = dict(
        os.environ,
        MOONMIND_CODEX_BROKER_URL=fleet.url,
        MOONMIND_CODEX_SHARD_COUNT=str(SHARDS),
        MOONMIND_CODEX_DATABASE_URL=fleet.producer.database_url,
        MOONMIND_CODEX_DEFAULT_QUEUE="hostapp",
        HOSTAPP_WORKSPACE=fleet.workspace,
        HOSTAPP_OUT=str(out),
    )
    host_worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.integration.hostapp",
            "worker",
            "-Q",
            "hostapp",
            "-c",
            "1",
            "--pool",
            "solo",
            "-n",
            f"hostapp@{fleet.tag}",
            "--without-gossip",
            "--without-mingle",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        host_settings = Settings(
            broker_url=fleet.url,
            shard_count=SHARDS,
            database_url=fleet.producer.database_url,
            default_queue="hostapp",
        )
        run_id = fleet.run_id("hostapp")
        repository = fleet.repository_on(0)
        app = create_app(host_settings, fleet.store)
        submit_run(
            app,
            {
                "run_id": run_id,
                "repository": repository,
                "phases": [
                    {"name": "implement", "command": ["sh", "-c", "echo change > file.txt"]},
                    {"name": "publish", "task": "hostapp.publish", "kwargs": {"title": "T"}},
                ],
            },
            host_settings,
            fleet.store,
        )
        fleet.expect_status(run_id, "succeeded")
        seen = json.loads(out.read_text())
        assert seen["run_id"] == run_id and seen["title"] == "T"
        assert (seen["repository"], seen["shard"], seen["host"]) == (repository, 0, "e2e-host")
        assert (seen["workspace_volume"], seen["workspace_path"]) == (
            fleet.workspace_volume(run_id),
            f"/work/{run_id}",
        )
        assert seen["phases"] == [["implement", "succeeded"]]
        assert seen["logs"]["implement"].endswith(f"/{run_id}/implement.log")
        assert fleet.workspace_file(f"{run_id}/file.txt").strip() == "change"
        assert fleet.phases(run_id) == [
            ("implement", 1, "succeeded"),
            ("publish", 1, "succeeded"),
        ]
    finally:
        host_worker.terminate()
        host_worker.wait(timeout=30)


def test_the_runs_commands_of_the_cli(fleet: RunFleet, tmp_path: Path) -> None:
    cli = str(Path(sys.executable).parent / "moonmind-codex")
    env = dict(
        os.environ,
        MOONMIND_CODEX_BROKER_URL=fleet.url,
        MOONMIND_CODEX_SHARD_COUNT=str(SHARDS),
        MOONMIND_CODEX_DATABASE_URL=fleet.producer.database_url,
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [cli, "runs", *args], capture_output=True, text=True, env=env, timeout=120, check=False
        )

    run_id = fleet.run_id("cli")
    definition = tmp_path / "run.yml"
    definition.write_text(
        f"repository: {fleet.repository_on(1)}\n"
        "phases:\n"
        "  - name: only\n"
        "    command: [sh, -c, 'echo via-cli']\n"
    )
    submitted = run("submit", str(definition), "--run-id", run_id)
    assert submitted.returncode == 0 and submitted.stdout.strip() == run_id, submitted.stderr
    fleet.expect_status(run_id, "succeeded")
    listed = json.loads(run("list", "--status", "succeeded", "--shard", "1", "--json").stdout)
    assert run_id in [r["run_id"] for r in listed]
    shown = json.loads(run("show", run_id, "--json").stdout)
    assert (shown["status"], shown["queue"], shown["shard"], shown["host"]) == (
        "succeeded",
        "codex-1",
        1,
        "e2e-host",
    )
    [attempt] = shown["attempts"]
    assert (attempt["phase"], attempt["status"], attempt["exit_code"]) == ("only", "succeeded", 0)
    text = run("show", run_id)
    assert text.returncode == 0 and f"run {run_id}: succeeded on codex-1" in text.stdout
    again = run("retry", run_id)
    assert again.returncode == 0 and "every phase already succeeded" in again.stdout
    # Bad input: clear errors with the documented codes, nothing recorded or sent.
    duplicate = run("submit", str(definition), "--run-id", run_id)
    assert duplicate.returncode == 65 and "already exists" in duplicate.stderr
    missing = run("cancel", "no-such-run")
    assert missing.returncode == 65 and "no run no-such-run" in missing.stderr
    bad = tmp_path / "bad.yml"
    bad.write_text("phases:\n  - name: x\n    command: echo hi\n")
    refused = run("submit", str(bad), "--run-id", fleet.run_id("bad"))
    assert refused.returncode == 65 and "a string is never split" in refused.stderr
    assert "Traceback" not in refused.stderr + missing.stderr + duplicate.stderr
    garbled = tmp_path / "garbled.yml"
    garbled.write_text("phases: [\n")
    assert run("submit", str(garbled), "--run-id", "x").returncode == 65


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"command": "echo hi"}, "command must be a non-empty list of strings"),
        ({"command": ["true"], "timeout_s": "abc"}, "timeout_s must be a number"),
        ({}, "command must be a non-empty list of strings"),
    ],
)
def test_a_bad_phase_message_starts_nothing_and_records_nothing(
    fleet: RunFleet, client: Any, kwargs: dict[str, Any], message: str
) -> None:
    from moonmind_codex.worker.celery_app import CODEX_PHASE_TASK
    from moonmind_codex.worker.request import PhaseRequestError

    run_id = fleet.run_id("bad")
    audit = fleet.state / "audit" / "codex-audit.jsonl"
    before = audit.read_text() if audit.exists() else ""
    logged = len(fleet.workers[0].logs())  # the worker's log so far (it only grows)
    with watching_engine() as events:
        app = create_app(fleet.producer, fleet.store)
        sent = app.send_task(
            CODEX_PHASE_TASK,
            kwargs={
                "run_id": run_id,
                "phase": "p",
                "repository": fleet.repository_on(0),
                **kwargs,
            },
        )
        with pytest.raises(PhaseRequestError) as caught:
            sent.get(timeout=60)
        started = job_starts(events, job_container_name(run_id, "p"))
    assert message in str(caught.value)
    assert fleet.store.get_run(run_id) is None and fleet.store.attempts(run_id) == []
    assert run_id not in (audit.read_text() if audit.exists() else "")[len(before) :]
    assert started == []
    # The worker logged one line for it, no traceback.
    logs = fleet.workers[0].logs()[logged:].decode("utf-8", "replace")
    assert "PhaseRequestError" in logs and "Traceback" not in logs
