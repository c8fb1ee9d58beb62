"""Faults a worker meets on its own host, with real components: the engine and the disk.

- The Docker engine goes away before a Codex phase's pre-flight: the worker's engine socket is a
  small proxy in this process (forwarding to the real engine), which the test stops and starts
  again. The machine's engine itself keeps running for everyone else.
- A full disk (a small tmpfs) under the phase logs, and a full or read-only audit log directory.

A broker and run store of its own; each test starts the worker it needs and removes it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
from kombu.connection import Connection

from harness.broker import running_broker
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
from moonmind_codex.producer.submit import retry_run, submit_run
from moonmind_codex.settings import Settings
from moonmind_codex.store import audit
from moonmind_codex.store.runstore import RunStore
from moonmind_codex.worker.celery_app import create_app

SHARDS = 2
# Inside the worker container: where the audit and artifact tmpfs disks of these tests go.
SMALL_ARTIFACTS = "/var/lib/moonmind-codex-small-artifacts"
SMALL_AUDIT = "/var/lib/moonmind-codex-small-audit"


class EngineProxy:
    """A unix socket that forwards every connection to the real engine; stop() is engine loss.

    Stopping closes the listening socket and every forwarded connection and removes the socket
    file, so a client sees exactly what it sees when the engine is down: no socket to connect to.
    """

    def __init__(self, directory: Path, target: str = "/var/run/docker.sock") -> None:
        self.path = directory / "docker.sock"
        self.target = target
        self.connections = 0
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.path))
        os.chown(self.path, WORKER_UID, WORKER_UID)  # the worker runs as its own uid
        listener.listen(64)
        self._listener = listener
        self._thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
            listener.close()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        with self._lock:
            opened = list(self._open)
        for sock in opened:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                downstream, _ = listener.accept()
            except OSError:
                return  # stopped
            downstream.setblocking(True)
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(self.target)
            except OSError:
                downstream.close()
                upstream.close()
                continue
            with self._lock:
                self.connections += 1
                self._open.update((downstream, upstream))
            done = threading.Barrier(2, action=functools.partial(self._close, downstream, upstream))
            for src, dst in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(src, dst, done), daemon=True).start()

    def _close(self, *socks: socket.socket) -> None:
        with self._lock:
            self._open.difference_update(socks)
        for sock in socks:
            sock.close()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, done: threading.Barrier) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # the other direction ends too
        with contextlib.suppress(threading.BrokenBarrierError):
            done.wait(timeout=600)


@dataclass
class FaultFleet(RecordedFleet):
    client: Any
    url: str
    work: Path
    state: Path
    url_file: Path

    def submit(self, definition: dict[str, Any]) -> str:
        return submit_run(
            create_app(self.producer, self.store), definition, self.producer, self.store
        )

    def retry(self, run_id: str) -> None:
        app = create_app(self.producer, self.store)
        assert retry_run(app, run_id, self.producer, self.store) == run_id

    def marker(self, run_id: str) -> list[str]:
        script = f"cat /work/{run_id}/marker 2>/dev/null || true"
        return self.in_workspace(run_id, script, if_missing="").split()

    def worker(self, shard: int, label: str, **options: Any) -> Any:
        """A started, ready worker for ``shard``; the caller removes it."""
        container = start_worker(
            self.client,
            self.tag,
            self.url_file,
            self.state,
            shard,
            f"mmc-test-{self.tag}-{label}-{secrets.token_hex(2)}",
            self.volume(shard),
            shard_count=SHARDS,
            **options,
        )
        try:
            logs = wait_for_log(container, " ready.", timeout_s=180)
            assert " ready." in logs, logs[-3000:]
        except BaseException:
            container.remove(force=True)
            raise
        return container

    def audit_records(self, run_id: str) -> list[dict[str, Any]]:
        records = audit.read_records(self.state / "audit" / "codex-audit.jsonl")
        return [r for r in records if r["run_id"] == run_id]


@pytest.fixture(scope="module")
def fleet(client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultFleet]:
    tag = secrets.token_hex(3)
    work = tmp_path_factory.mktemp("faultfleet")
    state = work / "state"
    state.mkdir()
    os.chown(state, WORKER_UID, WORKER_UID)
    try:
        with running_broker(client, work) as url:
            url_file = work / "broker_url"
            url_file.write_text(url)
            url_file.chmod(0o444)
            for n in range(SHARDS):
                api_key_login(client.volumes.create(f"mmc-test-{tag}-auth-{n}").name)
            producer = Settings(
                broker_url=url, shard_count=SHARDS, database_url=producer_database_url(state)
            )
            yield FaultFleet(
                client=client,
                url=url,
                tag=tag,
                work=work,
                state=state,
                url_file=url_file,
                producer=producer,
                store=RunStore.open(producer.database_url),
                workspace=workspace_prefix(tag),
            )
    finally:
        for leftover in client.containers.list(all=True, filters={"name": f"mmc-test-{tag}-"}):
            leftover.remove(force=True)
        for leftover in client.volumes.list(filters={"name": f"mmc-test-{tag}-"}):
            leftover.remove(force=True)


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not seen within {timeout_s} s: {what}"
        time.sleep(0.2)


class ContainerCreations:
    """Every container the engine creates while this watch is open, by name.

    A live event stream, not a look back: the engine keeps only its last 256 events, and
    other tests on this engine make containers too.
    """

    def __init__(self) -> None:
        self._engine = docker.from_env(timeout=60)
        # The stream is subscribed once this returns (the engine has answered the request).
        self._stream = self._engine.events(
            filters={"type": "container", "event": "create"}, decode=True
        )
        self._names: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        with contextlib.suppress(Exception):  # closed by close()
            for event in self._stream:
                name = event.get("Actor", {}).get("Attributes", {}).get("name", "")
                with self._lock:
                    self._names.append(name)

    def count(self, name: str) -> int:
        """Creations of ``name`` so far: every create before this call has been seen."""
        # Events arrive in order: once a container made now is seen, all earlier ones were.
        flag = f"mmc-test-flag-{secrets.token_hex(4)}"
        self._engine.containers.create(JOB_IMAGE, name=flag, entrypoint=["true"]).remove()
        wait_until(lambda: flag in self._snapshot(), 120, f"the engine's create event of {flag}")
        return self._snapshot().count(name)

    def _snapshot(self) -> list[str]:
        with self._lock:
            return list(self._names)

    def close(self) -> None:
        self._stream.close()
        self._thread.join(timeout=30)
        self._engine.close()


@pytest.fixture
def creations() -> Iterator[ContainerCreations]:
    watch = ContainerCreations()
    try:
        yield watch
    finally:
        watch.close()


def ready_messages(url: str, queue: str) -> int:
    """Messages waiting in ``queue`` of the broker (0 while it does not exist)."""
    conn: Any = Connection(url, connect_timeout=10)  # type: ignore[no-untyped-call]
    try:
        _, count, _ = conn.default_channel.queue_declare(queue=queue, passive=True)
        return int(count)
    except conn.channel_errors:
        return 0  # not declared yet
    finally:
        conn.release()


def cli_retry(fleet: FaultFleet, run_id: str) -> None:
    """`moonmind-codex runs retry RUN_ID`, as an operator types it."""
    env = dict(
        os.environ,
        MOONMIND_CODEX_BROKER_URL=fleet.url,
        MOONMIND_CODEX_SHARD_COUNT=str(SHARDS),
        MOONMIND_CODEX_DATABASE_URL=fleet.producer.database_url,
    )
    retried = subprocess.run(
        [str(Path(sys.executable).parent / "moonmind-codex"), "runs", "retry", run_id],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert retried.returncode == 0, retried.stdout + retried.stderr


def test_engine_lost_at_preflight_blocks_the_run_and_retry_resumes_it(
    fleet: FaultFleet, creations: ContainerCreations
) -> None:
    engine_dir = fleet.work / f"engine-{secrets.token_hex(3)}"
    engine_dir.mkdir()
    engine_dir.chmod(0o755)  # the worker's uid reaches the socket inside
    proxy = EngineProxy(engine_dir)
    proxy.start()
    default_worker = None
    worker = None
    try:
        worker = fleet.worker(0, "engine", engine_socket_dir=engine_dir)
        assert proxy.connections > 0  # its start-up guards went through the proxy
        run_id = fleet.run_id("engine")
        # "gate" is an ordinary phase: it waits in the default queue, which has no consumer
        # yet, until the engine is gone; consuming it then sends "second" to the shard.
        fleet.submit(
            {
                "run_id": run_id,
                "repository": fleet.repository_on(0),
                "phases": [
                    {"name": "first", "command": ["sh", "-c", "echo first >> marker"]},
                    {"name": "gate", "task": "moonmind_codex.ping", "kwargs": {"value": 1}},
                    {"name": "second", "command": ["sh", "-c", "echo second >> marker"]},
                ],
            }
        )
        # "first" ended and its task returned (container removed, "gate" sent).
        wait_until(
            lambda: ready_messages(fleet.url, fleet.producer.default_queue) == 1,
            300,
            f"the gate phase of {run_id} in the default queue ({fleet.phases(run_id)})",
        )
        assert fleet.phases(run_id)[0] == ("first", 1, "succeeded")
        used = proxy.connections

        proxy.stop()  # the engine is gone, as far as the worker can tell
        assert not proxy.path.exists()
        default_worker = start_default_worker(
            fleet.url,
            fleet.producer.database_url,
            f"default@faults-{fleet.tag}",
            {"MOONMIND_CODEX_SHARD_COUNT": str(SHARDS)},
        )
        fleet.expect_status(run_id, "blocked")
        assert proxy.connections == used  # nothing reached the engine meanwhile
        record = fleet.store.get_run(run_id)
        assert record is not None and record.preflight_status == "blocked"
        message = record.preflight_message or ""
        assert "Docker engine" in message, message
        assert "Fix: start the Docker engine on host e2e-host" in message, message
        assert fleet.phases(run_id) == [
            ("first", 1, "succeeded"),
            ("gate", 1, "succeeded"),
            ("second", 1, "blocked"),
        ]
        [second] = [a for a in fleet.store.attempts(run_id) if a.phase == "second"]
        assert "Docker engine" in (second.error or ""), second.error
        # No Codex command ran, and no job container was made for the blocked phase.
        assert fleet.marker(run_id) == ["first"]
        second_job = job_container_name(run_id, "second")
        assert creations.count(second_job) == 0

        proxy.start()  # the engine is back
        cli_retry(fleet, run_id)
        fleet.expect_status(run_id, "succeeded")
        assert fleet.phases(run_id) == [
            ("first", 1, "succeeded"),
            ("gate", 1, "succeeded"),
            ("second", 1, "blocked"),
            ("second", 2, "succeeded"),
        ]
        assert fleet.marker(run_id) == ["first", "second"]  # each ran exactly once
        assert creations.count(job_container_name(run_id, "first")) == 1
        # The retry is attempt 2, in a container of its own.
        assert creations.count(job_container_name(run_id, "second", 2)) == 1
        assert creations.count(second_job) == 0
        record = fleet.store.get_run(run_id)
        assert record is not None and record.preflight_status in ("ok", "warn", None)
    finally:
        if default_worker is not None:
            default_worker.terminate()
            default_worker.wait(timeout=30)
        if worker is not None:
            worker.remove(force=True)
        proxy.stop()


def worker_state(container: Any) -> tuple[str, str, int]:
    container.reload()
    attrs = container.attrs
    return container.status, attrs["State"]["StartedAt"], attrs["RestartCount"]


def test_a_full_log_disk_fails_the_phase_and_the_worker_serves_the_retry(
    fleet: FaultFleet, creations: ContainerCreations
) -> None:
    # The phase logs go to a 1 MiB disk; the job writes 3 MB (no newline) unless told otherwise.
    worker = fleet.worker(
        1,
        "disk",
        extra_env={"MOONMIND_CODEX_ARTIFACTS_DIR": SMALL_ARTIFACTS},
        tmpfs={SMALL_ARTIFACTS: f"size=1m,uid={WORKER_UID},gid={WORKER_UID},mode=0700"},
    )
    try:
        before = worker_state(worker)
        assert before[0] == "running"
        run_id = fleet.run_id("disk")
        fleet.submit(
            {
                "run_id": run_id,
                "repository": fleet.repository_on(1),
                "phases": [
                    {
                        "name": "big",
                        "command": [
                            "sh",
                            "-c",
                            "echo ran >> marker; if [ -f small ]; then echo small-output; "
                            "else head -c 3000000 /dev/zero | tr '\\0' x; fi",
                        ],
                    }
                ],
            }
        )
        # Never a success: the phase's log could not be written.
        fleet.expect_status(run_id, "failed")
        [attempt] = fleet.store.attempts(run_id)
        assert (attempt.phase, attempt.attempt, attempt.status) == ("big", 1, "failed")
        error = attempt.error or ""
        assert "could not write the phase log" in error, error
        assert "No space left on device" in error, error
        assert SMALL_ARTIFACTS in error, error
        # What did happen is kept: the job ran and how it ended.
        assert "the job ran and ended succeeded (exit code 0)" in error, error
        assert attempt.exit_code == 0
        assert fleet.marker(run_id) == ["ran"]  # the job ran once
        assert creations.count(job_container_name(run_id, "big")) == 1
        [finished] = [
            r for r in fleet.audit_records(run_id) if r["event"] == "codex_phase_finished"
        ]
        assert finished["outcome"] == "failed"
        # The worker loop is alive: same container, same start, never restarted.
        assert worker_state(worker) == before
        full = worker.exec_run(["df", "-k", SMALL_ARTIFACTS]).output.decode()
        assert full.splitlines()[1].split()[3] == "0", full  # the disk really was full

        # An operator frees the disk and retries the run: the same worker serves it.
        freed = worker.exec_run(["sh", "-c", f"rm -rf {SMALL_ARTIFACTS}/*"], user="0")
        assert freed.exit_code == 0, freed.output
        fleet.in_workspace(run_id, f"touch /work/{run_id}/small")
        fleet.retry(run_id)
        fleet.expect_status(run_id, "succeeded")
        assert fleet.phases(run_id) == [("big", 1, "failed"), ("big", 2, "succeeded")]
        assert fleet.marker(run_id) == ["ran", "ran"]  # once per attempt
        [second] = [a for a in fleet.store.attempts(run_id) if a.attempt == 2]
        shown = worker.exec_run(["cat", second.log_path or "/nonexistent"])
        assert shown.exit_code == 0 and shown.output == b"small-output\n", shown.output
        assert worker_state(worker) == before
    finally:
        worker.remove(force=True)


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_an_unwritable_audit_log_fails_the_phase_before_its_job_and_the_worker_goes_on(
    fleet: FaultFleet, creations: ContainerCreations, fault: str
) -> None:
    audit_log = f"{SMALL_AUDIT}/codex-audit.jsonl"
    worker = fleet.worker(
        1,
        "audit",
        extra_env={"MOONMIND_CODEX_AUDIT_LOG": audit_log},
        tmpfs={SMALL_AUDIT: f"size=64k,uid={WORKER_UID},gid={WORKER_UID},mode=0700"},
    )
    try:
        before = worker_state(worker)
        if fault == "full":
            # Fills the disk (head fails with "No space left on device" when it is full).
            worker.exec_run(["sh", "-c", f"head -c 1000000 /dev/zero > {SMALL_AUDIT}/filler"])
            left = worker.exec_run(["df", "-k", SMALL_AUDIT]).output.decode()
            assert left.splitlines()[1].split()[3] == "0", left
            expected = "No space left on device"
        else:
            made = worker.exec_run(["chmod", "0500", SMALL_AUDIT], user="0")
            assert made.exit_code == 0, made.output
            expected = "Permission denied"
        run_id = fleet.run_id("audit")
        fleet.submit(
            {
                "run_id": run_id,
                "repository": fleet.repository_on(1),
                "phases": [{"name": "p", "command": ["sh", "-c", "echo ran >> marker"]}],
            }
        )
        fleet.expect_status(run_id, "failed")
        [attempt] = fleet.store.attempts(run_id)
        assert (attempt.phase, attempt.attempt, attempt.status) == ("p", 1, "failed")
        error = attempt.error or ""
        assert "PhaseBookkeepingError: could not write the audit record" in error, error
        assert expected in error, error
        # Without its audit record no job starts.
        assert fleet.marker(run_id) == []
        job = job_container_name(run_id, "p")
        assert creations.count(job) == 0
        assert worker_state(worker) == before

        if fault == "full":
            fixed = worker.exec_run(["rm", f"{SMALL_AUDIT}/filler"], user="0")
        else:
            fixed = worker.exec_run(["chmod", "0700", SMALL_AUDIT], user="0")
        assert fixed.exit_code == 0, fixed.output
        fleet.retry(run_id)
        fleet.expect_status(run_id, "succeeded")
        assert fleet.phases(run_id) == [("p", 1, "failed"), ("p", 2, "succeeded")]
        assert fleet.marker(run_id) == ["ran"]
        assert creations.count(job_container_name(run_id, "p", 2)) == 1
        written = worker.exec_run(["cat", audit_log]).output.decode()
        events = [line for line in written.splitlines() if run_id in line]
        assert len(events) == 2 and "codex_phase_started" in events[0], written
        assert '"outcome": "succeeded"' in events[1], written
        assert worker_state(worker) == before
    finally:
        worker.remove(force=True)
