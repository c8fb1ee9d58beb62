"""Per-run workspace volumes: names, the settings that make them, and when one may go."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from moonmind_codex.core.workspace import (
    DEFAULT_PREFIX,
    keep_reason,
    prefix_problem,
    run_of_volume,
    run_volume_name,
    workspace_path,
)
from moonmind_codex.settings import SettingsError, load_settings

# What Docker accepts as a volume name (daemon/names: RestrictedNamePattern, at least 2 chars).
DOCKER_VOLUME_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")


@pytest.mark.parametrize(
    "run_id",
    ["r", "r-1", "Run_2.b", "0", "a" * 128, "x.-_", "ABC", "abc"],
)
def test_every_valid_run_id_names_a_valid_volume_of_its_own(run_id: str) -> None:
    name = run_volume_name(DEFAULT_PREFIX, run_id)
    assert name == f"moonmind_codex_run_{run_id}"
    assert DOCKER_VOLUME_NAME.match(name)
    assert len(name) <= 255  # a directory name under /var/lib/docker/volumes
    assert run_of_volume(DEFAULT_PREFIX, name) == run_id  # and back


def test_different_runs_never_share_a_volume() -> None:
    runs = ["r", "R", "r-1", "r_1", "r.1", "r1", "run", "run-a", "run-b"]
    assert len({run_volume_name("ws-", r) for r in runs}) == len(runs)


@pytest.mark.parametrize(
    "run_id", ["", "-r", ".", "..", "a/b", "../x", "r 1", "r\n", "é", "a" * 129, "_r"]
)
def test_a_run_id_that_cannot_name_a_volume_is_refused(run_id: str) -> None:
    with pytest.raises(ValueError, match="run id"):
        run_volume_name(DEFAULT_PREFIX, run_id)


@pytest.mark.parametrize("prefix", ["", "-x", "a/b", "a b", "x" * 65])
def test_a_prefix_that_cannot_start_a_volume_name_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        run_volume_name(prefix, "r")


def test_refusals_say_exactly_what_a_name_may_hold() -> None:
    rule = "use letters, digits, '_', '.' or '-', starting with a letter or digit"
    assert prefix_problem("-x") == rule
    assert prefix_problem("x" * 64) is None  # the longest prefix allowed
    assert prefix_problem("x" * 65) == "use at most 64 characters"
    with pytest.raises(ValueError) as caught:
        run_volume_name(DEFAULT_PREFIX, "r\n")
    assert str(caught.value) == (
        "run id 'r\\n' is not valid: use 1-128 letters, digits, '_', '.' or '-', starting "
        "with a letter or digit"
    )
    with pytest.raises(ValueError) as caught:
        run_volume_name("a b", "r")
    assert str(caught.value) == f"workspace volume prefix 'a b' is not valid: {rule}"
    assert keep_reason(None, False, None, CUTOFF) == "the run is not in the run store"


def test_volumes_outside_the_prefix_belong_to_no_run_of_this_fleet() -> None:
    assert run_of_volume("fleet-a-", "fleet-b-r1") is None
    assert run_of_volume("fleet-a-", "fleet-a-") is None  # no run id after the prefix
    assert run_of_volume("fleet-a-", "fleet-a--r") is None  # "-r" is no run id
    assert run_of_volume("fleet-a-", "fleet-a-r1") == "r1"


def test_jobs_and_hooks_see_the_run_at_work_slash_run_id() -> None:
    assert workspace_path("r-1") == "/work/r-1"


def test_the_prefix_setting_is_read_validated_and_the_old_shared_volume_still_loads() -> None:
    assert load_settings({}).workspace_volume_prefix == DEFAULT_PREFIX
    env = {"MOONMIND_CODEX_WORKSPACE_VOLUME_PREFIX": "fleet-a-ws-"}
    assert load_settings(env).workspace_volume_prefix == "fleet-a-ws-"
    # Rendered by older fleet.env files: accepted, no longer mounted anywhere.
    load_settings({"MOONMIND_CODEX_WORKSPACE_VOLUME": "moonmind_codex_workspaces"})
    with pytest.raises(SettingsError, match="MOONMIND_CODEX_WORKSPACE_VOLUME_PREFIX='/x'"):
        load_settings({"MOONMIND_CODEX_WORKSPACE_VOLUME_PREFIX": "/x"})


NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
CUTOFF = NOW - timedelta(days=7)


@pytest.mark.parametrize(
    ("status", "final", "finished_at", "kept"),
    [
        (None, False, None, "the run is not in the run store"),
        ("pending", False, None, "the run is pending"),
        ("running", False, NOW - timedelta(days=30), "the run is running"),
        ("failed", True, None, "has no finish time"),
        ("succeeded", True, NOW - timedelta(days=1), "within the retention"),
        ("succeeded", True, CUTOFF + timedelta(seconds=1), "within the retention"),
        ("succeeded", True, CUTOFF, None),
        ("failed", True, NOW - timedelta(days=8), None),
        ("cancelled", True, NOW - timedelta(days=30), None),
    ],
)
def test_only_a_run_finished_before_the_cutoff_loses_its_workspace(
    status: str | None, final: bool, finished_at: datetime | None, kept: str | None
) -> None:
    reason = keep_reason(status, final, finished_at, CUTOFF)
    if kept is None:
        assert reason is None
    else:
        assert reason is not None and kept in reason
