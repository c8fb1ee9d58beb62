"""Each run's workspace is a volume of its own, on the real engine with the real job image.

Jobs run through ``moonmind_codex.engine.jobs.launch_job``, the worker's own path: a job of one run
cannot list, read or change another run's checkout, a run's files carry over from phase to
phase, and ``moonmind-codex runs prune-workspaces`` removes only the workspaces of runs that
finished before the retention.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from harness.logins import JOB_IMAGE
from moonmind_codex.core.workspace import run_volume_name
from moonmind_codex.engine.containers import create_kwargs
from moonmind_codex.engine.jobs import JobResult, JobSpec, launch_job
from moonmind_codex.engine.run_volumes import ensure_run_volume, prepare_container
from moonmind_codex.producer.hooks import run_context
from moonmind_codex.settings import Settings
from moonmind_codex.store.runstore import RunStore
from tests.integration.conftest import VolumeFactory, unique

SettingsFor = Callable[..., Settings]
LABEL = "io.moonmind.codex."
CLI = str(Path(sys.executable).with_name("moonmind-codex"))


def phase(
    client: Any, settings: Settings, run_id: str, name: str, script: str
) -> tuple[JobResult, str]:
    """One phase of ``run_id`` through the worker's launch path; its result and its log."""
    spec = JobSpec(
        run_id=run_id,
        phase=name,
        command=["sh", "-c", script],
        shard=settings.locate_shard(0),
        timeout_s=120,
    )
    result = launch_job(settings, spec, client)
    return result, result.log_path.read_text()


def volume_listing(client: Any, volume: str) -> list[str]:
    """Every path in the volume (as root, so nothing is hidden by modes), sorted."""
    out: bytes = client.containers.run(
        JOB_IMAGE, entrypoint=["sh", "-c", "cd /v && find . | sort"], command=[], user="0:0",
        volumes={volume: {"bind": "/v", "mode": "ro"}}, network_mode="none", remove=True,
    )  # fmt: skip
    return out.decode().split()


@pytest.fixture
def settings(make_volume: VolumeFactory, settings_for: SettingsFor) -> Settings:
    # A shard volume the job uid can lock (no login needed: these jobs have no pre-flight).
    return settings_for(make_volume("auth", "empty"))


def test_a_job_of_one_run_can_neither_see_nor_change_another_runs_workspace(
    client: Any, settings: Settings
) -> None:
    run_a, run_b = unique("run-a"), unique("run-b")
    written, log = phase(
        client, settings, run_b, "implement",
        "echo b-secret > secret.txt && mkdir -p src && echo code > src/main.py && echo wrote",
    )  # fmt: skip
    assert written.outcome == "succeeded", log
    before = volume_listing(client, run_volume_name(settings.workspace_volume_prefix, run_b))

    # Run A's job looks for run B's checkout every way a shell can, then tries to change it.
    probe, log = phase(
        client, settings, run_a, "implement",
        "echo work=$(ls -A /work | tr '\\n' ,); "
        f"ls -d /work/{run_b} >/dev/null 2>&1 && echo B-DIR-VISIBLE; "
        f"cat /work/{run_b}/secret.txt 2>/dev/null && echo B-SECRET-READ; "
        "grep -rl b-secret /work /home /tmp /mnt /srv /media /var /run 2>/dev/null | "
        "  grep -q . && echo B-SECRET-FOUND; "
        f"grep -c ' /work' /proc/self/mounts | sed 's/^/work-mounts=/'; "
        f"{{ echo evil > /work/{run_b}/secret.txt; }} 2>/dev/null; "
        f"rm -rf /work/{run_b}/src 2>/dev/null; echo probed",
    )  # fmt: skip
    assert probe.outcome == "succeeded", log
    assert "probed" in log
    assert f"work={run_a},\n" in log  # its own directory, nothing else under /work
    assert "B-DIR-VISIBLE" not in log and "B-SECRET-READ" not in log, log
    assert "B-SECRET-FOUND" not in log, log
    assert "work-mounts=1" in log  # exactly one mount at /work: its run's volume

    # Run B's checkout is as B left it, and B's next phase reads its own file.
    assert "./" + run_b + "/secret.txt" in before
    assert volume_listing(client, run_volume_name(settings.workspace_volume_prefix, run_b)) == (
        before
    )
    again, log = phase(client, settings, run_b, "review", "cat secret.txt src/main.py")
    assert again.outcome == "succeeded"
    assert log.split() == ["b-secret", "code"]


def test_a_runs_files_carry_over_from_one_phase_to_the_next(
    client: Any, settings: Settings, tmp_path: Path
) -> None:
    run_id = unique("run")
    volume = run_volume_name(settings.workspace_volume_prefix, run_id)
    first, log = phase(
        client, settings, run_id, "specify",
        "git init -q . && echo spec > spec.md && stat -c 'root=%u:%g:%a' /work && pwd",
    )  # fmt: skip
    assert first.outcome == "succeeded", log
    assert "root=1000:1000:755" in log  # given to the job uid by the worker, not root's
    assert f"/work/{run_id}" in log
    made = client.volumes.get(volume)
    assert made.attrs["Labels"][f"{LABEL}role"] == "workspace"
    assert made.attrs["Labels"][f"{LABEL}run-id"] == run_id

    second, log = phase(
        client, settings, run_id, "plan",
        "cat spec.md && test -d .git && echo has-git && echo plan > plan.md && pwd",
    )  # fmt: skip
    assert second.outcome == "succeeded", log
    assert log.split() == ["spec", "has-git", f"/work/{run_id}"]

    # The publish hook names that volume and path: mounted at /work there, both files are.
    store = RunStore.open(f"sqlite:///{tmp_path / 'runs.sqlite3'}")
    store.ensure_run(run_id, repository="org/repo", status="running")
    context = run_context(store, run_id, "publish", settings.workspace_volume_prefix)
    assert context.workspace_volume == volume
    shown = volume_listing(client, context.workspace_volume)
    relative = "." + context.workspace_path.removeprefix("/work")
    assert {f"{relative}/spec.md", f"{relative}/plan.md"} <= set(shown)


def prune(settings: Settings, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "MOONMIND_CODEX_WORKSPACE_VOLUME_PREFIX": settings.workspace_volume_prefix,
        "MOONMIND_CODEX_DATABASE_URL": database_url,
    }
    return subprocess.run(
        [CLI, "runs", "prune-workspaces", *args],
        capture_output=True, text=True, check=False, timeout=120, env=env,
    )  # fmt: skip


def test_prune_removes_only_workspaces_of_runs_finished_before_the_retention(
    client: Any, settings: Settings, settings_for: SettingsFor, tmp_path: Path
) -> None:
    database_url = f"sqlite:///{tmp_path / 'runs.sqlite3'}"
    store = RunStore.open(database_url)
    now = datetime.now(UTC)
    shard = settings.locate_shard(0)
    runs = {
        "old": ("succeeded", now - timedelta(days=10)),
        "old-failed": ("failed", now - timedelta(days=9)),
        "recent": ("succeeded", now - timedelta(hours=1)),
        # Retried after it had failed: running again, with its first finish long past.
        "running": ("running", now - timedelta(days=30)),
        "busy-old": ("cancelled", now - timedelta(days=30)),  # a container still mounts it
    }
    ids = {label: unique(label) for label in [*runs, "unknown"]}
    for label, (status, finished_at) in runs.items():
        store.ensure_run(ids[label], status=status)
        store.update_run(ids[label], status=status, finished_at=finished_at)
    volumes = {
        label: ensure_run_volume(client, settings, shard, ids[label]) for label in ids
    }  # "unknown": a volume whose run the store does not know
    # Another fleet's prefix on the same engine: never this fleet's to remove.
    assert settings.auth_volume_override is not None
    other = settings_for(settings.auth_volume_override)  # a prefix of its own
    foreign = ensure_run_volume(client, other, shard, ids["old"])
    holder = client.containers.create(
        JOB_IMAGE, entrypoint=["true"], command=[], network_mode="none",
        volumes={volumes["busy-old"]: {"bind": "/work", "mode": "ro"}},
    )  # fmt: skip
    try:
        dry = prune(settings, database_url, "--older-than", "7d", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert {v.name for v in client.volumes.list()} >= {*volumes.values(), foreign}

        done = prune(settings, database_url, "--older-than", "7d")
        assert done.returncode == 0, done.stderr
        left = {v.name for v in client.volumes.list()}
        assert volumes["old"] not in left and volumes["old-failed"] not in left, done.stdout
        kept = {"recent", "running", "unknown", "busy-old"}
        assert {volumes[label] for label in kept} <= left, done.stdout
        assert foreign in left
        lines = {line.split()[0]: line for line in done.stdout.splitlines()[1:]}
        assert "removed" in lines[volumes["old"]]
        assert "kept: the run is running" in lines[volumes["running"]]
        assert "within the retention" in lines[volumes["recent"]]
        assert "not in the run store" in lines[volumes["unknown"]]
        assert "a container still uses it" in lines[volumes["busy-old"]]
        assert foreign not in lines
    finally:
        holder.remove(force=True)

    # A removed run's next phase (a retry after the retention) gets a fresh, usable workspace.
    started = time.monotonic()
    result, log = phase(client, settings, ids["old"], "again", "ls -A; echo fresh > f")
    assert result.outcome == "succeeded" and log.split() == [], log
    assert time.monotonic() - started < 60


def test_the_container_preparing_a_workspace_is_root_with_chown_only_and_no_login(
    client: Any, settings: Settings
) -> None:
    run_id = unique("run")
    volume = run_volume_name(settings.workspace_volume_prefix, run_id)
    spec = prepare_container(settings, settings.locate_shard(0), volume, run_id)
    container = client.containers.create(**create_kwargs(settings, spec))
    try:
        attrs = client.api.inspect_container(container.id)
    finally:
        container.remove(force=True)
    host = attrs["HostConfig"]
    assert attrs["Config"]["User"] == "0:0"
    assert host["CapDrop"] == ["ALL"]
    assert sorted(host["CapAdd"]) == ["CHOWN", "DAC_OVERRIDE", "FOWNER"]
    assert host["SecurityOpt"] == ["no-new-privileges"] and host["NetworkMode"] == "none"
    # The run's volume only: the shard's login is not this container's business.
    assert [(m["Destination"], m["Name"]) for m in attrs["Mounts"]] == [("/work", volume)]
    labels = attrs["Config"]["Labels"]
    assert labels[f"{LABEL}role"] == "workspace" and labels[f"{LABEL}run-id"] == run_id
    assert f"{LABEL}volume" not in labels  # it mounts no shard volume
