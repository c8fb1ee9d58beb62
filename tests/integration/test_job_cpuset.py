"""Job containers on the cores the fleet gives them (MOONMIND_CODEX_JOB_CPUSET), real engine."""

from __future__ import annotations

import secrets
from typing import Any

from moonmind_codex.core.shard import Shard
from moonmind_codex.engine.jobs import JobSpec, launch_job
from moonmind_codex.settings import Settings
from tests.integration.conftest import VolumeFactory

ALLOWED = ["sh", "-c", "grep Cpus_allowed_list /proc/self/status"]


def _job(volume: str, run_id: str, phase: str) -> JobSpec:
    return JobSpec(
        run_id=run_id,
        phase=phase,
        command=ALLOWED,
        shard=Shard(number=0, queue="codex-0", volume=volume, host="test-host"),
        timeout_s=60,
    )


def test_a_job_runs_only_on_the_cores_the_setting_names(
    client: Any, make_volume: VolumeFactory, settings_for: Any
) -> None:
    run_id = f"cpuset-{secrets.token_hex(4)}"
    volume = make_volume()
    pinned: Settings = settings_for(volume, job_cpuset="0")
    result = launch_job(pinned, _job(volume, run_id, "pinned"), client)
    assert result.outcome == "succeeded", result.log_path.read_text()
    assert result.log_path.read_text().split() == ["Cpus_allowed_list:", "0"]
    # Without the setting the job may use every core of the machine.
    free = launch_job(settings_for(volume), _job(volume, run_id, "free"), client)
    cores = free.log_path.read_text().split()[-1]
    assert cores != "0" and cores.startswith("0"), cores
