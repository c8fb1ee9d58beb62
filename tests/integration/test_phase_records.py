"""A phase attempt on the real engine with the run store: recorded, exactly once, full logs;
a login the server rejected quarantines its shard until a new login is imported."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine

from harness.engine import EngineEvents, watching_engine
from harness.logins import JOB_IMAGE, run_in_volume
from moonmind_codex.core.workspace import run_volume_name
from moonmind_codex.engine.job_gate import CliVerdictCache
from moonmind_codex.engine.jobs import JobSpec, job_container_name, launch_job
from moonmind_codex.settings import Settings
from moonmind_codex.store.runstore import RunStore
from moonmind_codex.worker.phase import run_phase
from moonmind_codex.worker.request import PhaseBookkeepingError, PhaseRequest
from tests.integration.conftest import VolumeFactory, in_volume, unique
from tests.unit.test_gate import (
    API_401,
    REFRESH_EXPIRED,
    REFRESH_INVALIDATED,
    REFRESH_REUSED,
    RETRY_429,
    STREAM,
)

SettingsFor = Callable[..., Settings]


def store_for(tmp_path: Path) -> RunStore:
    return RunStore.open(f"sqlite:///{tmp_path / 'state' / 'runs.sqlite3'}")


def workspace_file(client: Any, workspace: str, path: str) -> str:
    """``<run id>/<file>`` from that run's volume (``workspace``: the volumes' prefix)."""
    volume = run_volume_name(workspace, path.split("/", 1)[0])
    output: bytes = client.containers.run(
        JOB_IMAGE,
        entrypoint=["cat", f"/work/{path}"],
        command=[],
        volumes={volume: {"bind": "/work", "mode": "ro"}},
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
    settings = settings_for(volume)
    workspace = settings.workspace_volume_prefix
    store = store_for(tmp_path)
    run_id = unique("run")
    request = PhaseRequest(
        run_id=run_id,
        phase="implement",
        command=["sh", "-c", "echo ran >> marker; echo done"],
        repository="org/repo",
    )
    with watching_engine() as events:
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
        settled = events.settle()
        created = [
            e["Actor"]["ID"]
            for e in settled
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
    settings = settings_for(volume)
    workspace = settings.workspace_volume_prefix
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
        volumes={run_volume_name(workspace, run_id): {"bind": "/work", "mode": "ro"}},
        network_mode="none",
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


def containers_created(events: EngineEvents, volume: str) -> list[str]:
    """The roles of the containers created on ``volume``'s shard while ``events`` watched."""
    return [
        e["Actor"]["Attributes"].get("io.moonmind.codex.role", "?")
        for e in events.containers({"io.moonmind.codex.volume": volume})
        if e.get("Action") == "create"
    ]


def test_the_login_is_checked_inside_the_one_job_container_and_stays_out_of_the_log(
    client: Any, make_volume: VolumeFactory, settings_for: SettingsFor, tmp_path: Path
) -> None:
    volume = make_volume(state="api_key")
    settings = settings_for(volume)
    with watching_engine() as events:
        result = run_phase(
            settings,
            client,
            store_for(tmp_path),
            PhaseRequest(run_id=unique("run"), phase="p", command=["sh", "-c", "printf hello"]),
            worker="w",
            task_id="t",
            delivered_on=None,
        )
        created = containers_created(events, volume)
    assert (result.outcome, result.preflight_status) == ("succeeded", "ok")
    assert created == ["job"]  # no separate probe container
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


# --- Truthful health: a login the server rejected quarantines the shard ------------------------


def failing_with(message: str) -> list[str]:
    """A job that prints ``message`` on stderr as `codex exec` does, and exits 1 like it."""
    return ["sh", "-c", 'printf "%s\\n" "working..."; printf "%s\\n" "$0" >&2; exit 1', message]


def phase_in(
    settings: Settings, client: Any, store: RunStore, command: list[str], run_id: str
) -> Any:
    request = PhaseRequest(run_id=run_id, phase="implement", command=command)
    return run_phase(settings, client, store, request, worker="w", task_id=run_id,
                     delivered_on=None)  # fmt: skip


def ran(client: Any, workspace: str, run_id: str) -> bool:
    volume = run_volume_name(workspace, run_id)
    listing: bytes = client.containers.run(
        JOB_IMAGE, entrypoint=["ls", "-A", "/work"], command=[], remove=True,
        volumes={volume: {"bind": "/work", "mode": "ro"}}, network_mode="none",
    )  # fmt: skip
    return run_id in listing.decode().split()


def test_a_rejected_login_quarantines_the_shard_until_a_new_login_is_imported(
    client: Any, make_volume: VolumeFactory, settings_for: SettingsFor, tmp_path: Path
) -> None:
    volume = make_volume(state="api_key")
    settings = settings_for(volume)
    workspace = settings.workspace_volume_prefix
    store = store_for(tmp_path)
    # The real CLI's message for a refresh token another copy of the login already redeemed.
    failed = phase_in(settings, client, store, failing_with(REFRESH_REUSED), unique("run"))
    assert (failed.outcome, failed.exit_code) == ("failed", 1)
    assert failed.message is not None and "quarantined" in failed.message
    health = store.shard_health(volume)
    assert health is not None and health.quarantined
    assert (health.reason, health.host, health.shard) == ("refresh_token_reused", "test-host", 0)
    [attempt] = store.attempts(failed.run_id)
    assert attempt.status == "failed" and "refresh_token_reused" in (attempt.error or "")
    # The next phase on that shard is blocked by its own gate: its command never runs.
    blocked_run = unique("run")
    blocked = phase_in(settings, client, store, ["sh", "-c", "echo ran > marker"], blocked_run)
    assert blocked.outcome == "blocked" and blocked.message is not None
    assert (
        "sign in again: the server rejected this login "
        f"(refresh_token_reused, {health.since_text})" in blocked.message
    )
    assert "moonmind-codex login --shard 0" in blocked.message
    assert not ran(client, workspace, blocked_run)
    run = store.get_run(blocked_run)
    assert run is not None and run.status == "blocked"
    assert "server rejected this login" in (run.preflight_message or "")
    still = store.shard_health(volume)
    assert still is not None and still.quarantined  # a blocked phase changes nothing
    # An operator imports a new login (the real CLI, another key): the next phase runs.
    done = run_in_volume(volume, "codex login --with-api-key", stdin=b"sk-test-NEW-LOGIN-1111")
    assert done.returncode == 0, done.stderr
    next_run = unique("run")
    resumed = phase_in(settings, client, store, ["sh", "-c", "echo ran > marker"], next_run)
    assert resumed.outcome == "succeeded", resumed.message
    assert workspace_file(client, workspace, f"{next_run}/marker") == "ran\n"
    lifted = store.shard_health(volume)
    assert lifted is not None and (lifted.status, lifted.run_id) == ("healthy", next_run)
    assert lifted.auth_digest != health.auth_digest
    assert [e.event for e in store.shard_health_events(volume)] == ["quarantined", "lifted"]


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (REFRESH_EXPIRED, "refresh_token_expired"),
        (REFRESH_INVALIDATED, "refresh_token_invalidated"),
        (API_401, "401 unauthorized"),
    ],
    ids=["expired", "invalidated", "401"],
)
def test_each_permanent_failure_of_the_cli_quarantines_the_shard(
    client: Any,
    make_volume: VolumeFactory,
    settings_for: SettingsFor,
    tmp_path: Path,
    message: str,
    reason: str,
) -> None:
    volume = make_volume(state="api_key")
    settings = settings_for(volume)
    store = store_for(tmp_path)
    failed = phase_in(settings, client, store, failing_with(message), unique("run"))
    assert failed.outcome == "failed"
    health = store.shard_health(volume)
    assert health is not None and (health.status, health.reason) == ("quarantined", reason)


@pytest.mark.parametrize("message", [RETRY_429, STREAM], ids=["429", "stream"])
def test_a_transient_failure_does_not_quarantine_the_shard(
    client: Any,
    make_volume: VolumeFactory,
    settings_for: SettingsFor,
    tmp_path: Path,
    message: str,
) -> None:
    volume = make_volume(state="api_key")
    settings = settings_for(volume)
    workspace = settings.workspace_volume_prefix
    store = store_for(tmp_path)
    failed = phase_in(settings, client, store, failing_with(message), unique("run"))
    assert (failed.outcome, failed.message) == ("failed", None)
    assert store.shard_health(volume) is None
    next_run = unique("run")
    after = phase_in(settings, client, store, ["sh", "-c", "echo ran > marker"], next_run)
    assert after.outcome == "succeeded"
    assert workspace_file(client, workspace, f"{next_run}/marker") == "ran\n"
