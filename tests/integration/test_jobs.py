"""The job launcher on the real engine: the mount the upstream attempt never exercised."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from moonmind_codex.jobs import JobSpec, job_container_name, launch_job
from moonmind_codex.settings import Settings
from tests.integration.conftest import api_key_login, run_in_volume

SettingsFor = Callable[..., Settings]


def spec(
    volume: str,
    command: list[str],
    *,
    run_id: str = "run-1",
    phase: str = "specify",
    timeout_s: float = 60,
) -> JobSpec:
    return JobSpec(
        run_id=run_id,
        phase=phase,
        command=command,
        shard=0,
        queue="codex-0",
        volume=volume,
        timeout_s=timeout_s,
    )


def test_job_mounts_the_login_read_write_as_uid_1000(
    client: Any, make_volume: Callable[..., str], settings_for: SettingsFor
) -> None:
    volume = make_volume()
    api_key_login(volume)
    settings = settings_for(volume)
    script = (
        "echo uid=$(id -u) gid=$(id -g) home=$HOME pwd=$(pwd);"
        "stat -c 'codexdir=%u:%g:%a' /home/app/.codex;"
        "codex login status;"
        "echo written-by-job > /home/app/.codex/job-marker;"
        "env | grep -c -i -E 'key|token|secret|password' | sed 's/^/secret-vars=/';"
        "env | grep MOONMIND;"
        "if ls -la /var/run/docker.sock /run/docker.sock 2>/dev/null; then echo SOCKET-VISIBLE; fi;"
        "grep CapEff /proc/self/status"
    )
    result = launch_job(settings, spec(volume, ["sh", "-c", script]), client)
    log = result.log_path.read_text()
    assert result.outcome == "succeeded", log
    assert result.exit_code == 0
    assert "uid=1000 gid=1000 home=/home/app pwd=/work/run-1" in log
    assert "codexdir=1000:1000:700" in log
    assert "API key configured" in log  # the real CLI sees the volume's login
    assert "SOCKET-VISIBLE" not in log
    assert "CapEff:\t0000000000000000" in log  # cap_drop ALL
    assert "MOONMIND_CODEX_RUN_ID=run-1" in log and "MOONMIND_CODEX_PHASE=specify" in log
    assert "secret-vars=0" in log  # no credential in the job's environment
    # Written through to the volume: another container sees the job's file.
    seen = run_in_volume(volume, "cat /home/app/.codex/job-marker")
    assert seen.stdout.decode().strip() == "written-by-job"
    # Always removed, and labelled while it existed.
    assert not client.containers.list(all=True, filters={"name": result.container_name})
    assert result.log_path == settings.artifacts_dir / "spec_workflows" / "run-1" / "specify.log"


def test_failed_command_exit_code_is_captured(
    client: Any, make_volume: Callable[..., str], settings_for: SettingsFor
) -> None:
    volume = make_volume()
    result = launch_job(
        settings_for(volume), spec(volume, ["sh", "-c", "echo boom; exit 3"]), client
    )
    assert (result.outcome, result.exit_code) == ("failed", 3)
    assert "boom" in result.log_path.read_text()


def test_timeout_kills_the_container(
    client: Any, make_volume: Callable[..., str], settings_for: SettingsFor
) -> None:
    volume = make_volume()
    started = time.monotonic()
    result = launch_job(settings_for(volume), spec(volume, ["sleep", "60"], timeout_s=2), client)
    assert result.outcome == "timed_out" and result.exit_code is None
    assert time.monotonic() - started < 30
    assert "killed after the 2 s timeout" in result.log_path.read_text()
    assert not client.containers.list(all=True, filters={"name": result.container_name})


def test_second_job_on_the_same_volume_is_refused_as_busy(
    client: Any, make_volume: Callable[..., str], settings_for: SettingsFor
) -> None:
    volume = make_volume()
    settings = settings_for(volume)
    results: dict[str, Any] = {}
    first = threading.Thread(
        target=lambda: results.setdefault(
            "first", launch_job(settings, spec(volume, ["sleep", "6"], phase="plan"), client)
        )
    )
    first.start()
    deadline = time.monotonic() + 30
    while not client.containers.list(filters={"name": job_container_name("run-1", "plan")}):
        assert time.monotonic() < deadline, "first job never started"
        time.sleep(0.2)
    time.sleep(1.0)  # let its entry point take the lock
    second = launch_job(settings, spec(volume, ["true"], phase="tasks"), client)
    first.join(timeout=60)
    assert second.outcome == "busy" and second.exit_code == 75
    assert "auth volume busy" in second.log_path.read_text()
    assert results["first"].outcome == "succeeded"


def test_redelivered_phase_awaits_the_first_container(
    client: Any, make_volume: Callable[..., str], settings_for: SettingsFor
) -> None:
    volume = make_volume()
    settings = settings_for(volume)
    job = spec(volume, ["sh", "-c", "sleep 4; echo done-once"], phase="implement")
    results: list[Any] = []
    first = threading.Thread(target=lambda: results.append(launch_job(settings, job, client)))
    first.start()
    name = job_container_name("run-1", "implement")
    deadline = time.monotonic() + 30
    while not client.containers.list(filters={"name": name}):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    redelivered = launch_job(settings, job, client)
    first.join(timeout=60)
    assert redelivered.reused_existing is True
    assert redelivered.outcome == "succeeded"
    assert redelivered.container_id == results[0].container_id  # one container, not two
    assert not client.containers.list(all=True, filters={"name": name})


def test_exited_container_of_an_earlier_delivery_is_reaped(
    client: Any, make_volume: Callable[..., str], settings_for: SettingsFor
) -> None:
    volume = make_volume()
    settings = settings_for(volume)
    job = spec(volume, ["sh", "-c", "echo first-delivery; exit 4"], phase="review")
    from moonmind_codex.jobs import job_container_config

    leftover = client.containers.create(**job_container_config(settings, job))
    leftover.start()
    leftover.wait(timeout=30)
    result = launch_job(settings, job, client)
    assert (result.reused_existing, result.exit_code, result.outcome) == (True, 4, "failed")
    assert result.container_id == leftover.id
    assert "first-delivery" in result.log_path.read_text()
    assert not client.containers.list(
        all=True, filters={"name": job_container_name("run-1", "review")}
    )


@pytest.mark.parametrize(
    ("run_id", "phase", "message"),
    [
        ("../etc", "p", "run_id '../etc' is not valid"),
        ("r", "a b", "phase 'a b' is not valid"),
        ("", "p", "run_id '' is not valid"),
    ],
)
def test_bad_ids_are_refused_before_anything_runs(run_id: str, phase: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        JobSpec(
            run_id=run_id,
            phase=phase,
            command=["true"],
            shard=0,
            queue="codex-0",
            volume="v",
            timeout_s=1,
        )


def test_container_names_are_stable_and_distinct() -> None:
    assert job_container_name("Run_1", "specify") == job_container_name("Run_1", "specify")
    assert job_container_name("run-1", "a") != job_container_name("run-1a", "")
    assert job_container_name("Run.1", "x").startswith("mmc-job-run-1-x-")
