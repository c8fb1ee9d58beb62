"""A phase attempt on the real engine with the run store: recorded, exactly once, full logs."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine

from harness.logins import JOB_IMAGE
from moonmind_codex.jobs import JobSpec, job_container_name, launch_job
from moonmind_codex.phase import PhaseBookkeepingError, PhaseRequest, run_phase
from moonmind_codex.preflight import CliVerdictCache
from moonmind_codex.runstore import RunStore
from moonmind_codex.settings import Settings
from tests.integration.conftest import VolumeFactory, in_volume, unique

SettingsFor = Callable[..., Settings]


def store_for(tmp_path: Path) -> RunStore:
    return RunStore.open(f"sqlite:///{tmp_path / 'state' / 'runs.sqlite3'}")


def workspace_file(client: Any, workspace: str, path: str) -> str:
    output: bytes = client.containers.run(
        JOB_IMAGE,
        entrypoint=["cat", f"/work/{path}"],
        command=[],
        volumes={workspace: {"bind": "/work", "mode": "ro"}},
        network_mode="none",
        remove=True,
    )
    return output.decode()


def job_containers(client: Any, run_id: str) -> list[Any]:
    return client.containers.list(all=True, filters={"label": f"io.moonmind.codex.run-id={run_id}"})


def test_redelivery_after_the_container_is_gone_returns_the_record_and_starts_nothing(
    client: Any, make_volume: VolumeFactory, settings_for: SettingsFor, tmp_path: Path
) -> None:
    volume = make_volume(state="api_key")
    workspace = make_volume("ws")
    settings = settings_for(volume, workspace_volume=workspace)
    store = store_for(tmp_path)
    run_id = unique("run")
    request = PhaseRequest(
        run_id=run_id,
        phase="implement",
        command=["sh", "-c", "echo ran >> marker; echo done"],
        repository="org/repo",
    )
    since = int(time.time()) - 1
    first = run_phase(
        settings, client, store, request, worker="w", task_id="t-1", delivered_on=None
    )
    assert (first.outcome, first.exit_code, first.replayed) == ("succeeded", 0, False)
    assert job_containers(client, run_id) == []  # removed after its end was recorded
    # The broker lost the ack: the same message comes again, under the same task id.
    again = run_phase(
        settings, client, store, request, worker="w", task_id="t-1", delivered_on=None
    )
    assert (again.outcome, again.exit_code, again.replayed) == ("succeeded", 0, True)
    assert workspace_file(client, workspace, f"{run_id}/marker").split() == ["ran"]  # ran once
    created = [
        e["Actor"]["ID"]
        for e in client.events(since=since, until=int(time.time()) + 1, decode=True)
        if e.get("Type") == "container"
        and e.get("Action") == "create"
        and e["Actor"]["Attributes"].get("name") == job_container_name(run_id, "implement")
    ]
    assert created == [first.container_id]  # the first delivery's, and no other
    [attempt] = store.attempts(run_id)
    assert (attempt.status, attempt.exit_code, attempt.task_id) == ("succeeded", 0, "t-1")
    run = store.get_run(run_id)
    assert run is not None
    assert (run.status, run.repository, run.shard, run.volume, run.host) == (
        "succeeded",
        "org/repo",
        0,
        volume,
        "test-host",
    )
    # A new attempt (what `runs retry` sends) does run again.
    retry = run_phase(
        settings,
        client,
        store,
        PhaseRequest(run_id=run_id, phase="implement", command=request.command, attempt=2),
        worker="w",
        task_id="t-2",
        delivered_on=None,
    )
    assert (retry.outcome, retry.replayed) == ("succeeded", False)
    assert workspace_file(client, workspace, f"{run_id}/marker").split() == ["ran", "ran"]


def test_a_blocked_phase_marks_the_run_blocked_and_runs_nothing(
    client: Any, make_volume: VolumeFactory, settings_for: SettingsFor, tmp_path: Path
) -> None:
    volume = make_volume(state="empty")  # never signed in
    workspace = make_volume("ws")
    settings = settings_for(volume, workspace_volume=workspace)
    store = store_for(tmp_path)
    run_id = unique("run")
    result = run_phase(
        settings,
        client,
        store,
        PhaseRequest(
            run_id=run_id, phase="plan", command=["sh", "-c", "echo ran > marker; codex exec x"]
        ),
        worker="w",
        task_id="t",
        delivered_on=None,
    )
    assert result.outcome == "blocked" and result.message is not None
    assert "moonmind-codex login --shard 0" in result.message
    assert job_containers(client, run_id) == []
    # The job container's own pre-flight stopped it before the command: no marker, no run dir.
    listing = client.containers.run(
        JOB_IMAGE, entrypoint=["ls", "-A", "/work"], command=[], remove=True,
        volumes={workspace: {"bind": "/work", "mode": "ro"}}, network_mode="none",
    )  # fmt: skip
    assert run_id not in listing.decode().split()
    run = store.get_run(run_id)
    assert run is not None and run.status == "blocked"
    assert run.preflight_status == "blocked" and "not logged in" in (run.preflight_message or "")
    [attempt] = store.attempts(run_id)
    assert attempt.status == "blocked"


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        # The last line has no newline: Codex and Spec Kit often end like this.
        ("echo one; printf '{\"x\": 1}'", b'one\n{"x": 1}'),
        ("echo to-stderr >&2; printf 'tail-on-stderr' >&2", b"to-stderr\ntail-on-stderr"),
    ],
)
def test_phase_log_holds_the_whole_output_last_bytes_included(
    client: Any,
    make_volume: VolumeFactory,
    settings_for: SettingsFor,
    script: str,
    expected: bytes,
) -> None:
    volume = make_volume()
    settings = settings_for(volume)
    for _ in range(5):  # the lost last line was intermittent: try it several times
        run_id = unique("run")
        spec = JobSpec(
            run_id=run_id,
            phase="p",
            command=["sh", "-c", script],
            shard=settings.locate_shard(0),
            timeout_s=60,
        )
        result = launch_job(settings, spec, client)
        assert result.log_path.read_bytes() == expected


def test_phase_log_of_several_megabytes_is_complete(
    client: Any, make_volume: VolumeFactory, settings_for: SettingsFor
) -> None:
    volume = make_volume()
    settings = settings_for(volume)
    spec = JobSpec(
        run_id=unique("run"),
        phase="big",
        command=["sh", "-c", "seq 1 600000; printf end"],
        shard=settings.locate_shard(0),
        timeout_s=120,
    )
    result = launch_job(settings, spec, client)
    expected = "".join(f"{n}\n" for n in range(1, 600001)).encode() + b"end"
    assert len(expected) > 4_000_000
    assert result.log_path.read_bytes() == expected


def test_a_store_that_cannot_be_written_starts_nothing_and_is_never_a_success(
    client: Any, make_volume: VolumeFactory, settings_for: SettingsFor
) -> None:
    volume = make_volume(state="api_key")
    settings = settings_for(volume)
    # A database nobody can open (as a full or read-only disk would be; root ignores modes).
    unwritable = RunStore(create_engine("sqlite:////proc/self/no-such-dir/runs.sqlite3"))
    run_id = unique("run")
    with pytest.raises(PhaseBookkeepingError, match="could not record the phase's start"):
        run_phase(
            settings,
            client,
            unwritable,
            PhaseRequest(run_id=run_id, phase="p", command=["true"]),
            worker="w",
            task_id="t",
            delivered_on=None,
        )
    assert job_containers(client, run_id) == []


def containers_created(client: Any, since: float, volume: str) -> list[str]:
    """The roles of the containers created on ``volume``'s shard since ``since``."""
    events = client.events(
        since=since, until=time.time(), decode=True,
        filters={"type": "container", "event": "create",
                 "label": f"io.moonmind.codex.volume={volume}"},
    )  # fmt: skip
    return [e["Actor"]["Attributes"].get("io.moonmind.codex.role", "?") for e in events]


def test_the_login_is_checked_inside_the_one_job_container_and_stays_out_of_the_log(
    client: Any, make_volume: VolumeFactory, settings_for: SettingsFor, tmp_path: Path
) -> None:
    volume = make_volume(state="api_key")
    settings = settings_for(volume)
    since = time.time()
    result = run_phase(
        settings,
        client,
        store_for(tmp_path),
        PhaseRequest(run_id=unique("run"), phase="p", command=["sh", "-c", "printf hello"]),
        worker="w",
        task_id="t",
        delivered_on=None,
    )
    assert (result.outcome, result.preflight_status) == ("succeeded", "ok")
    assert containers_created(client, since, volume) == ["job"]  # no separate probe container
    assert result.log_path is not None and Path(result.log_path).read_bytes() == b"hello"


def test_an_unchanged_login_skips_the_cli_and_a_changed_one_runs_it_again(
    client: Any, make_volume: VolumeFactory, settings_for: SettingsFor
) -> None:
    volume = make_volume(state="api_key")
    settings = settings_for(volume)
    cache = CliVerdictCache()

    def phase(command: list[str]) -> Any:
        spec = JobSpec(
            run_id=unique("run"), phase="p", command=command, shard=settings.locate_shard(0),
            timeout_s=60, preflight=True, known_verdict=cache.known(volume),
        )  # fmt: skip
        result = launch_job(settings, spec, client)
        cache.learn(volume, result.preflight_report)
        assert result.outcome == "succeeded", result.log_path.read_text()
        return result.preflight_report["codex_status"]

    assert phase(["true"])["cached"] is False  # first sight of this login: the CLI runs
    again = phase(["true"])
    assert again["cached"] is True and again["summary"] == "Logged in using an API key"
    # A job changes what `codex login status` reads: the next phase asks the CLI again.
    in_volume(volume, "printf 'model = \"o3\"\\n' > /home/app/.codex/config.toml")
    assert phase(["true"])["cached"] is False
    assert phase(["true"])["cached"] is True


@pytest.mark.parametrize("preflight", [False, True], ids=["bare-job", "with-pre-flight"])
def test_a_verdict_line_is_removed_but_a_lookalike_from_the_command_is_kept(
    client: Any, make_volume: VolumeFactory, settings_for: SettingsFor, preflight: bool
) -> None:
    volume = make_volume(state="api_key")
    settings = settings_for(volume)
    script = "echo '[moonmind-codex] pre-flight {}' >&2; printf 'out'"
    spec = JobSpec(
        run_id=unique("run"), phase="p", command=["sh", "-c", script],
        shard=settings.locate_shard(0), timeout_s=60, preflight=preflight,
    )  # fmt: skip
    result = launch_job(settings, spec, client)
    assert result.outcome == "succeeded"
    assert result.log_path.read_bytes() == b"[moonmind-codex] pre-flight {}\nout"
