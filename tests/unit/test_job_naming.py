"""Job container names: one per phase attempt, shared by that attempt's redeliveries."""

from __future__ import annotations

import re

import pytest

from moonmind_codex.core.shard import Shard
from moonmind_codex.engine.jobs import JobSpec, job_container_name


def test_redeliveries_of_an_attempt_share_a_name_and_a_retry_gets_its_own() -> None:
    first = job_container_name("run-1", "plan")
    assert job_container_name("run-1", "plan", 1) == first  # attempt 1 is the default
    second = job_container_name("run-1", "plan", 2)
    third = job_container_name("run-1", "plan", 3)
    assert len({first, second, third}) == 3
    assert second.startswith("moonmind-codex-job-run-1-plan-a2-")
    assert re.fullmatch(r"moonmind-codex-job-run-1-plan-[0-9a-f]{8}", first)


def test_names_of_different_phases_and_runs_never_meet() -> None:
    names = {
        job_container_name(run, phase, attempt)
        for run in ("r", "r-a2", "R")
        for phase in ("plan", "plan-a2")
        for attempt in (1, 2)
    }
    assert len(names) == 12  # slugs may collide ("R" and "r"); the digest keeps them apart


@pytest.mark.parametrize(
    ("run_id", "phase"), [("run-1\n", "plan"), ("run-1", "plan\n"), ("", "plan"), ("r", "-x")]
)
def test_a_job_spec_refuses_a_run_id_or_phase_that_is_not_a_name(run_id: str, phase: str) -> None:
    # A trailing newline too: it would end up in the container name and the labels.
    with pytest.raises(ValueError, match="is not valid: use 1-128 letters"):
        JobSpec(run_id, phase, ["codex"], Shard(0, "codex-0", "codex_auth_0", "h"), 60.0)
