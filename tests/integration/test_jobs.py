"""The job launcher on the real engine, the real job image and the real Codex CLI.

This is the mount the upstream attempt never exercised: every test runs a real container through
``launch_job`` and checks what happened inside it (its log), in the volume, and on the engine.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.engine import watching_engine
from harness.logins import FAKE_API_KEY
from moonmind_codex.core.shard import Shard
from moonmind_codex.core.workspace import run_volume_name
from moonmind_codex.engine.containers import create_kwargs
from moonmind_codex.engine.jobs import JobResult, JobSpec, job_container, job_container_name
from moonmind_codex.engine.jobs import launch_job as _launch_job
from moonmind_codex.engine.run_volumes import ensure_run_volume
from moonmind_codex.settings import Settings
from tests.integration.conftest import VolumeFactory, in_volume

SettingsFor = Callable[..., Settings]
LABEL = "io.moonmind.codex."


def spec(
    volume: str,
    command: list[str],
    *,
    run_id: str,
    phase: str = "specify",
    # Longer than any HOLD (120 s at most): only the timeout test's own job may be killed by
    # its timeout, however slow a loaded machine makes the rest.
    timeout_s: float = 300,
) -> JobSpec:
    return JobSpec(
        run_id=run_id,
        phase=phase,
        command=command,
        shard=Shard(number=0, queue="codex-0", volume=volume, host="test-host"),
        timeout_s=timeout_s,
    )


def launch_job(settings: Settings, job: JobSpec, client: Any) -> JobResult:
    result = _launch_job(settings, job, client)
    # Whatever happened, the container is gone afterwards.
    assert not client.containers.list(all=True, filters={"name": result.container_name})
    return result


class Background:
    """``launch_job`` in a thread (a first delivery, or a job holding the volume)."""

    def __init__(self, settings: Settings, job: JobSpec, client: Any) -> None:
        self.result: JobResult | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(settings, job, client))
        self.thread.start()

    def _run(self, settings: Settings, job: JobSpec, client: Any) -> None:
        try:
            self.result = launch_job(settings, job, client)
        except BaseException as exc:
            self.error = exc

    def join(self) -> JobResult:
        self.thread.join(timeout=120)
        assert self.error is None, self.error
        assert self.result is not None
        return self.result


def wait_running(client: Any, name: str, timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        found = client.containers.list(filters={"name": name, "status": "running"})
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"container {name} never started"
        time.sleep(0.1)


def wait_for_text(path: Path, text: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not (path.exists() and text in path.read_text()):
        assert time.monotonic() < deadline, f"{text!r} never reached {path}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def logged_in_volume(module_volume: VolumeFactory) -> str:
    """A volume signed in with the real `codex login --with-api-key` (fake key on stdin)."""
    return module_volume("auth", "api_key")


@pytest.fixture
def run_id() -> Iterator[str]:
    # Unique per test: container names derive from run and phase, and others share the engine.
    yield f"run-{time.monotonic_ns():x}"


# A job that holds on until the test releases it: a bounded wait on a file (it fails if not
# released within 120 s), so the test inspects it while it runs without racing its end.
HOLD = (
    "i=0; until [ -e /tmp/release ] || [ $i -ge 1200 ]; do sleep 0.1; i=$((i+1)); done; "
    "[ -e /tmp/release ]"
)


def release(client: Any, name: str) -> None:
    """Let the held job ``name`` go on."""
    container = client.containers.get(name)
    done = container.exec_run(["touch", "/tmp/release"])
    if done.exit_code != 0:
        container.reload()
        state = {k: container.attrs["State"].get(k) for k in ("Status", "ExitCode", "OOMKilled")}
        why = f"exit {done.exit_code} {done.output!r}; the job container: {state}"
        raise AssertionError(f"could not release {name}: {why}")


INSIDE = """
echo "uid=$(id -u) gid=$(id -g) home=$HOME pwd=$(pwd)"
stat -c 'codexdir=%u:%g:%a' /home/app/.codex
stat -c 'authfile=%u:%g:%a' /home/app/.codex/auth.json
codex login status > /tmp/status 2>&1; echo "status-exit=$?"; sed 's/^/status: /' /tmp/status
echo written-by-job > /home/app/.codex/job-marker
echo "env-names=$(env | cut -d= -f1 | sort | tr '\\n' ' ')"
echo "secret-vars=$(env | grep -c -i -E 'key|token|secret|passw')"
for p in /var/run/docker.sock /run/docker.sock /docker.sock /tmp/docker.sock \
         /home/app/docker.sock /work/docker.sock; do
  [ -e "$p" ] && echo "SOCKET-VISIBLE:$p"
done
find / -path /proc -prune -o -path /sys -prune -o \\( -type s -o -name '*docker*.sock' \\) \
  -print 2>/dev/null | sed 's/^/SOCKET-FOUND:/'
echo "socket-mounts=$(grep -c -E 'docker\\.sock|\\.sock ' /proc/self/mountinfo)"
echo "DOCKER_HOST=${DOCKER_HOST:-unset}"
grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status
"""
INSIDE += HOLD + "\necho job-done\n"


def test_job_runs_as_1000_on_the_shard_volume_and_sees_the_login(
    client: Any, logged_in_volume: str, settings_for: SettingsFor, run_id: str
) -> None:
    settings = settings_for(logged_in_volume)
    job = spec(logged_in_volume, ["sh", "-c", INSIDE], run_id=run_id)
    background = Background(settings, job, client)
    running = wait_running(client, job_container_name(run_id, "specify"))
    attrs = running.attrs  # the real container's configuration, while it runs
    release(client, running.name)
    result = background.join()
    log = result.log_path.read_text()

    assert (result.outcome, result.exit_code, result.reused_existing) == ("succeeded", 0, False)
    assert result.container_id == running.id
    assert result.log_path == settings.artifacts_dir / "spec_workflows" / run_id / "specify.log"
    # Mounted at /home/app/.codex, read-write, as uid 1000; the workspace dir is /work/<run_id>.
    assert f"uid=1000 gid=1000 home=/home/app pwd=/work/{run_id}" in log
    assert "codexdir=1000:1000:700" in log
    assert "authfile=1000:1000:600" in log
    # The real CLI sees the volume's login (made by a real `codex login --with-api-key`).
    assert "status-exit=0" in log and "status: API key configured" in log
    assert FAKE_API_KEY not in log
    assert "job-done" in log
    # Written through: another container on the same volume sees the job's file.
    assert in_volume(logged_in_volume, "cat /home/app/.codex/job-marker").strip() == (
        "written-by-job"
    )
    # No Docker socket anywhere obvious, none mounted, no engine address in the environment.
    assert "SOCKET-VISIBLE" not in log and "SOCKET-FOUND" not in log
    assert "socket-mounts=0" in log and "DOCKER_HOST=unset" in log
    # No capabilities, no privilege gain; only the run and phase in the env, no credential.
    assert "CapEff:\t0000000000000000" in log and "CapBnd:\t0000000000000000" in log
    assert "NoNewPrivs:\t1" in log
    assert "secret-vars=0" in log
    assert f"MOONMIND_CODEX_RUN_ID={run_id}" in attrs["Config"]["Env"]
    assert "MOONMIND_CODEX_PHASE=specify" in attrs["Config"]["Env"]
    env_names = {e.split("=", 1)[0] for e in attrs["Config"]["Env"]}
    assert {n for n in env_names if n.startswith("MOONMIND")} == {
        "MOONMIND_CODEX_RUN_ID",
        "MOONMIND_CODEX_PHASE",
    }

    # The engine's view of the same container.
    host_config = attrs["HostConfig"]
    mounts = {m["Destination"]: m for m in attrs["Mounts"]}
    assert set(mounts) == {"/home/app/.codex", "/work"}
    assert mounts["/home/app/.codex"]["Type"] == "volume"
    assert mounts["/home/app/.codex"]["Name"] == logged_in_volume
    assert mounts["/home/app/.codex"]["RW"] is True
    # The run's own workspace volume, none shared with other runs.
    assert mounts["/work"]["Name"] == run_volume_name(settings.workspace_volume_prefix, run_id)
    assert not any("docker.sock" in (m.get("Source") or "") for m in attrs["Mounts"])
    assert attrs["Config"]["User"] == "1000:1000"
    assert host_config["CapDrop"] == ["ALL"] and not host_config["CapAdd"]
    assert host_config["SecurityOpt"] == ["no-new-privileges"]
    assert host_config["Privileged"] is False
    assert host_config["NetworkMode"] == settings.job_network
    labels = dict(attrs["Config"]["Labels"])
    # The image's own labels, inherited: its source digest and the CLI versions it carries.
    for inherited in ("source-digest", "codex-version", "specify-version"):
        labels.pop(LABEL + inherited)
    assert {k: v for k, v in labels.items() if k.startswith(LABEL)} == {
        LABEL + "role": "job",
        LABEL + "run-id": run_id,
        LABEL + "phase": "specify",
        LABEL + "attempt": "1",
        LABEL + "shard": "0",
        LABEL + "queue": "codex-0",
        LABEL + "volume": logged_in_volume,
        LABEL + "host": "test-host",
    }


def test_logs_stream_while_the_job_runs_and_exit_code_is_captured(
    client: Any, make_volume: VolumeFactory, settings_for: SettingsFor, run_id: str
) -> None:
    volume = make_volume()
    settings = settings_for(volume)
    command = ["sh", "-c", f"echo early; {HOLD}; echo late >&2; exit 3"]
    job = spec(volume, command, run_id=run_id)
    background = Background(settings, job, client)
    running = wait_running(client, job_container_name(run_id, "specify"))
    log_path = settings.artifacts_dir / "spec_workflows" / run_id / "specify.log"
    deadline = time.monotonic() + 10
    while not (log_path.exists() and "early" in log_path.read_text()):
        assert time.monotonic() < deadline, "the log did not stream while the job ran"
        time.sleep(0.1)
    assert background.result is None  # still running when its first line reached the file
    assert "late" not in log_path.read_text()
    release(client, running.name)
    result = background.join()
    assert (result.outcome, result.exit_code) == ("failed", 3)
    assert "early" in log_path.read_text() and "late" in log_path.read_text()  # stderr too


def test_timeout_kills_the_container(
    client: Any, make_volume: VolumeFactory, settings_for: SettingsFor, run_id: str
) -> None:
    volume = make_volume()
    started = time.monotonic()
    result = launch_job(
        settings_for(volume),
        spec(volume, ["sh", "-c", "echo sleeping; sleep 120"], run_id=run_id, timeout_s=2),
        client,
    )
    assert (result.outcome, result.exit_code) == ("timed_out", None)
    assert time.monotonic() - started < 20
    log = result.log_path.read_text()
    assert "sleeping" in log and "killed after the 2 s timeout" in log


def test_second_phase_on_a_busy_volume_gets_busy(
    client: Any, make_volume: VolumeFactory, settings_for: SettingsFor, run_id: str
) -> None:
    volume = make_volume()
    settings = settings_for(volume)
    holder = spec(volume, ["sh", "-c", f"echo holding; {HOLD}"], run_id=run_id, phase="plan")
    first = Background(settings, holder, client)
    # The entry point starts the command only once it holds the lock.
    wait_for_text(settings.artifacts_dir / "spec_workflows" / run_id / "plan.log", "holding")
    second = launch_job(settings, spec(volume, ["true"], run_id=run_id, phase="tasks"), client)
    assert (second.outcome, second.exit_code) == ("busy", 75)
    assert "auth volume busy" in second.log_path.read_text()
    release(client, job_container_name(run_id, "plan"))
    assert first.join().outcome == "succeeded"
    # The lock went with the first job: the same phase now runs.
    again = launch_job(settings, spec(volume, ["true"], run_id=run_id, phase="tasks"), client)
    assert again.outcome == "succeeded"


def test_a_job_cannot_defeat_the_lock_that_guards_its_volume(
    client: Any, make_volume: VolumeFactory, settings_for: SettingsFor, run_id: str
) -> None:
    # The job owns every file in the volume: it deletes whatever it can, plants a lock file of
    # its own, even replaces a subdirectory; another job must still find the volume busy.
    volume = make_volume()
    settings = settings_for(volume)
    defeat = (
        "cd /home/app/.codex; rm -rf ./.moonmind-codex.lock ./* ./.[!.]* 2>/dev/null; "
        "touch .moonmind-codex.lock; mkdir -p lock; echo defeated; " + HOLD
    )
    holder = spec(volume, ["sh", "-c", defeat], run_id=run_id, phase="plan")
    first = Background(settings, holder, client)
    wait_for_text(settings.artifacts_dir / "spec_workflows" / run_id / "plan.log", "defeated")
    second = launch_job(settings, spec(volume, ["true"], run_id=run_id, phase="tasks"), client)
    assert (second.outcome, second.exit_code) == ("busy", 75)
    release(client, job_container_name(run_id, "plan"))
    assert first.join().outcome == "succeeded"


def test_redelivered_phase_awaits_the_running_container(
    client: Any, make_volume: VolumeFactory, settings_for: SettingsFor, run_id: str
) -> None:
    volume = make_volume()
    settings = settings_for(volume)
    script = f"echo ran >> /home/app/.codex/runs; {HOLD}; echo done-once"
    job = spec(volume, ["sh", "-c", script], run_id=run_id, phase="implement")
    first = Background(settings, job, client)
    wait_running(client, job_container_name(run_id, "implement"))

    seen: list[int] = []
    stop = threading.Event()

    def count() -> None:
        while not stop.is_set():
            found = client.containers.list(all=True, filters={"label": f"{LABEL}run-id={run_id}"})
            seen.append(len(found))
            time.sleep(0.1)

    counter = threading.Thread(target=count)
    counter.start()
    try:
        second = Background(settings, job, client)
        # The redelivery has found the running container and waits for it; then it may end.
        log_path = settings.artifacts_dir / "spec_workflows" / run_id / "implement.log"
        wait_for_text(log_path, "earlier delivery of this phase")
        release(client, job_container_name(run_id, "implement"))
        redelivered = second.join()
    finally:
        stop.set()
        counter.join()
    original = first.join()

    assert redelivered.reused_existing is True and original.reused_existing is False
    assert redelivered.container_id == original.container_id  # one container, not two
    assert (redelivered.outcome, redelivered.exit_code) == ("succeeded", 0)
    assert seen and max(seen) == 1
    assert in_volume(volume, "cat /home/app/.codex/runs").split() == ["ran"]  # ran once
    assert "earlier delivery of this phase" in redelivered.log_path.read_text()


def test_exited_container_of_an_earlier_delivery_is_reaped(
    client: Any, make_volume: VolumeFactory, settings_for: SettingsFor, run_id: str
) -> None:
    volume = make_volume()
    settings = settings_for(volume)
    job = spec(volume, ["sh", "-c", "echo first-delivery; exit 4"], run_id=run_id, phase="review")
    # A worker died after its job ended, before it collected the container (it had made the
    # run's workspace volume first, as launch_job does).
    ensure_run_volume(client, settings, job.shard, run_id)
    leftover = client.containers.create(**create_kwargs(settings, job_container(settings, job)))
    leftover.start()
    leftover.wait(timeout=30)
    # ... after its log pump had copied the output, which the new delivery replays in full.
    log_path = settings.artifacts_dir / "spec_workflows" / run_id / "review.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text("first-delivery\n")
    result = launch_job(settings, job, client)
    assert (result.reused_existing, result.exit_code, result.outcome) == (True, 4, "failed")
    assert result.container_id == leftover.id
    assert result.log_path == log_path
    assert log_path.read_text().count("first-delivery") == 1  # complete, not duplicated


@pytest.mark.parametrize(
    ("bad_run_id", "bad_phase", "message"),
    [
        ("../etc", "p", "run_id '../etc' is not valid"),
        ("r", "a b", "phase 'a b' is not valid"),
        ("", "p", "run_id '' is not valid"),
        ("-rf", "p", "run_id '-rf' is not valid"),
    ],
)
def test_bad_ids_are_refused_before_anything_runs(
    client: Any,
    make_volume: VolumeFactory,
    settings_for: SettingsFor,
    run_id: str,
    bad_run_id: str,
    bad_phase: str,
    message: str,
) -> None:
    volume = make_volume()
    settings = settings_for(volume)
    with watching_engine() as events:
        with pytest.raises(ValueError, match=message):
            launch_job(settings, spec(volume, ["true"], run_id=bad_run_id, phase=bad_phase), client)
        assert not settings.artifacts_dir.exists()  # no log directory, inside or outside it
        # Positive control: a valid phase on the same volume just after is seen by the same watch.
        assert launch_job(settings, spec(volume, ["true"], run_id=run_id), client).outcome == (
            "succeeded"
        )
        created = [
            e for e in events.containers({LABEL + "volume": volume}) if e.get("Action") == "create"
        ]
    # The engine's record: the refused phase never made a container on its volume.
    assert [e["Actor"]["Attributes"][LABEL + "run-id"] for e in created] == [run_id]


# Container names pinned: a redelivered phase finds its container by name, also after a worker
# upgrade or from another process, so the name must never change for the same run and phase.
PINNED_NAMES = {
    ("Run_1", "specify"): "moonmind-codex-job-run-1-specify-fb34ad9c",
    ("run-1", "specify"): "moonmind-codex-job-run-1-specify-d39e6ef8",
    ("Run.1", "x"): "moonmind-codex-job-run-1-x-3f3fba8d",
}


def test_container_names_are_stable_and_distinct() -> None:
    assert {ids: job_container_name(*ids) for ids in PINNED_NAMES} == PINNED_NAMES
    # Another interpreter with another hash seed: no per-process salt in the name.
    code = (
        "from moonmind_codex.engine.jobs import job_container_name as n;"
        f"print([n(*ids) for ids in {list(PINNED_NAMES)!r}])"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, PYTHONHASHSEED="12345"),
    )
    assert other.stdout.strip() == repr(list(PINNED_NAMES.values()))
    # Ids that read alike once slugged, or long ids that share the slugged prefix, stay apart;
    # every name is one Docker accepts.
    ids = [
        ("Run_1", "specify"),
        ("run-1", "specify"),
        ("RUN.1", "specify"),
        ("run_1", "specify"),
        ("run-1", "Specify"),
        ("r" * 60 + "a", "p"),
        ("r" * 60 + "b", "p"),
        ("r", "p" * 30 + "a"),
        ("r", "p" * 30 + "b"),
    ]
    names = [job_container_name(*pair) for pair in ids]
    assert len(set(names)) == len(ids), names
    for name in names:
        assert re.fullmatch(r"moonmind-codex-job-[a-z0-9-]+-[0-9a-f]{8}", name), name
        assert len(name) <= 128, name


def test_a_runaway_job_meets_its_memory_and_process_limits(
    client: Any, make_volume: VolumeFactory, settings_for: SettingsFor, run_id: str
) -> None:
    volume = make_volume()
    settings = settings_for(volume, job_memory_mb=256, job_pids_limit=64)
    # Past the memory limit: the kernel kills the job (128 + SIGKILL), the host is untouched.
    hog = "b = bytearray(600 * 1024 * 1024); print('allocated', flush=True)"
    big = launch_job(
        settings, spec(volume, ["python3", "-c", hog], run_id=run_id, phase="m"), client
    )
    assert (big.outcome, big.exit_code) == ("failed", 137)
    assert "allocated" not in big.log_path.read_text()
    # Past the process limit: the job's own forks fail; with the default limit they do not.
    forks = ["sh", "-c", "for i in $(seq 120); do sleep 3 & done; echo all-forked"]
    limited = launch_job(settings, spec(volume, forks, run_id=run_id, phase="p"), client)
    assert limited.outcome == "failed", limited.log_path.read_text()
    assert "fork" in limited.log_path.read_text().lower()
    assert "all-forked" not in limited.log_path.read_text()
    roomy = launch_job(settings_for(volume), spec(volume, forks, run_id=run_id, phase="q"), client)
    assert roomy.outcome == "succeeded" and "all-forked" in roomy.log_path.read_text()
