"""Worker shard containers of a throw-away fleet (the worker image), for tests and benchmarks."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moonmind_codex.core.workspace import run_volume_name

if TYPE_CHECKING:
    from moonmind_codex.settings import Settings
    from moonmind_codex.store.runstore import RunStore

WORKER_IMAGE = "moonmind-codex/worker:latest"
JOB_IMAGE = "moonmind-codex/job:latest"
WORKER_UID = 10001
# Test fleets give up on a held volume lock after this many 1 s retries.
BUSY_MAX_RETRIES = 8
TEST_ALLOWED_COMMANDS = ("codex", "specify", "git", "sh", "true", "sleep", "id")
# Inside the worker container: the state directory, and the run store shared with producers.
STATE_DIR = "/var/lib/moonmind-codex"
WORKER_DATABASE_URL = f"sqlite:///{STATE_DIR}/state/runs.sqlite3"
# Where a worker started with ``engine_socket_dir`` sees that directory (its engine socket).
ENGINE_SOCKET_MOUNT = "/run/moonmind-codex-engine"


def workspace_prefix(fleet_tag: str) -> str:
    """The prefix of a test fleet's run workspace volumes (removed with the fleet's volumes)."""
    return f"mmc-test-{fleet_tag}-ws-"


def producer_database_url(state: Path) -> str:
    """The same run store as the workers', seen from the host."""
    return f"sqlite:///{state / 'state' / 'runs.sqlite3'}"


def start_worker(
    client: Any,
    fleet_tag: str,
    url_file: Path,
    state: Path,
    shard: int,
    name: str,
    volume: str,
    extra_env: dict[str, str] | None = None,
    shard_count: int = 3,
    *,
    engine_socket_dir: Path | None = None,
    tmpfs: dict[str, str] | None = None,
    cpuset: str | None = None,
) -> Any:
    """One shard's worker container.

    ``engine_socket_dir``: talk to the engine through ``<dir>/docker.sock`` (for example a
    proxy a test can stop) instead of the host's socket, which is then not mounted at all.
    ``tmpfs``: extra tmpfs mounts (path -> mount options), for example a small disk.
    ``cpuset``: the cores the worker container may use (``docker run --cpuset-cpus``).
    """
    env = {
        "MOONMIND_CODEX_SHARD": str(shard),
        "MOONMIND_CODEX_SHARD_COUNT": str(shard_count),
        "MOONMIND_CODEX_AUTH_VOLUME_TEMPLATE": f"mmc-test-{fleet_tag}-auth-{{shard}}",
        "MOONMIND_CODEX_HOST_NAME": "e2e-host",
        "MOONMIND_CODEX_BROKER_URL_FILE": "/run/secrets/moonmind_codex_broker_url",
        "MOONMIND_CODEX_ARTIFACTS_DIR": "/var/lib/moonmind-codex/artifacts",
        "MOONMIND_CODEX_AUDIT_LOG": "/var/lib/moonmind-codex/audit/codex-audit.jsonl",
        # Each run's workspace: the volume mmc-test-<tag>-ws-<run id>, made by the worker.
        "MOONMIND_CODEX_WORKSPACE_VOLUME_PREFIX": workspace_prefix(fleet_tag),
        "MOONMIND_CODEX_WORKER_CONTAINER": name,
        "MOONMIND_CODEX_DATABASE_URL": WORKER_DATABASE_URL,
        # A phase that meets a held volume lock retries after this long (30 s in production).
        "MOONMIND_CODEX_BUSY_RETRY_SECONDS": "1",
        # ... and gives up after this many retries (20 in production).
        "MOONMIND_CODEX_BUSY_MAX_RETRIES": str(BUSY_MAX_RETRIES),
        # What the tests' phases run (production allows codex, specify and git).
        "MOONMIND_CODEX_ALLOWED_COMMANDS": ",".join(TEST_ALLOWED_COMMANDS),
        # No keep-alive runs or probe containers beside a test's own (the keep-alive test
        # turns them on).
        "MOONMIND_CODEX_KEEPALIVE_ENABLED": "false",
        **(extra_env or {}),
    }
    volumes = {
        "/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"},
        str(state): {"bind": "/var/lib/moonmind-codex", "mode": "rw"},
        str(url_file): {"bind": "/run/secrets/moonmind_codex_broker_url", "mode": "ro"},
    }
    if engine_socket_dir is not None:
        del volumes["/var/run/docker.sock"]
        volumes[str(engine_socket_dir)] = {"bind": ENGINE_SOCKET_MOUNT, "mode": "rw"}
        engine_url = f"unix://{ENGINE_SOCKET_MOUNT}/docker.sock"
        env = {"MOONMIND_CODEX_DOCKER_URL": engine_url, "DOCKER_HOST": engine_url, **env}
    optional: dict[str, Any] = {"tmpfs": tmpfs} if tmpfs else {}
    if cpuset is not None:
        optional["cpuset_cpus"] = cpuset
    return client.containers.run(
        WORKER_IMAGE,
        name=name,
        detach=True,
        network_mode="host",
        environment=env,
        group_add=[str(os.stat("/var/run/docker.sock").st_gid)],
        volumes=volumes,
        labels={
            "io.moonmind.codex.role": "worker",
            "io.moonmind.codex.shard": str(shard),
            "io.moonmind.codex.volume": volume,
            "io.moonmind.codex.host": "e2e-host",
        },
        **optional,
    )


def wait_for_log(container: Any, text: str, timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        logs: str = container.logs().decode("utf-8", "replace")
        if text in logs:
            return logs
        container.reload()
        if container.status == "exited":
            return logs
        time.sleep(0.3)
    raise TimeoutError(f"{container.name}: {text!r} not seen in {timeout_s} s")


def start_default_worker(
    broker_url: str, database_url: str, node: str, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A plain default-queue worker of the package's own app (ordinary run phases, ping)."""
    env = dict(
        os.environ,
        MOONMIND_CODEX_BROKER_URL=broker_url,
        MOONMIND_CODEX_DATABASE_URL=database_url,
        **(extra_env or {}),
    )
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from moonmind_codex.worker.celery_app import create_app;"
            "from moonmind_codex.settings import load_settings;"
            "create_app(load_settings(), sticky=False).worker_main(['worker','-Q','celery',"
            f"'-c','1','--pool','solo','-n','{node}','--without-gossip','--without-mingle'])",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@dataclass
class RecordedFleet:
    """What the run tests ask of a throw-away fleet with a run store: names, records, workspace."""

    tag: str
    producer: Settings
    store: RunStore
    # The prefix of the fleet's run workspace volumes (MOONMIND_CODEX_WORKSPACE_VOLUME_PREFIX).
    workspace: str

    def volume(self, shard: int) -> str:
        return f"mmc-test-{self.tag}-auth-{shard}"

    def repository_on(self, shard: int) -> str:
        """A repository key the producer routes to ``shard``."""
        from moonmind_codex.producer.router import route_key

        return next(
            k
            for k in (f"org/runs-{i}" for i in range(1000))
            if route_key(k, self.producer).queue == f"codex-{shard}"
        )

    def run_id(self, label: str) -> str:
        return f"run-{label}-{secrets.token_hex(3)}"

    def wait_status(self, run_id: str, wanted: set[str], timeout_s: float = 300) -> str:
        """The run's status once it is one of ``wanted`` (polling the run store)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            record = self.store.get_run(run_id)
            if record is not None and record.status in wanted:
                return record.status
            time.sleep(0.3)
        record = self.store.get_run(run_id)
        raise TimeoutError(
            f"run {run_id}: {record and record.status} after {timeout_s} s: "
            f"{self.store.attempts(run_id)}"
        )

    def expect_status(self, run_id: str, expected: str, timeout_s: float = 300) -> None:
        """Wait for the run to end and assert it ended ``expected``; if not, say why it did not.

        A red run in CI is read once, from its log: the message carries the run's pre-flight
        verdict and every attempt's error, not only the status.
        """
        from moonmind_codex.core.states import RUN_FINAL_STATES

        status = self.wait_status(run_id, set(RUN_FINAL_STATES), timeout_s)
        if status != expected:
            raise AssertionError(f"expected {expected}, got {self.explain(run_id)}")

    def explain(self, run_id: str) -> str:
        """The run's status, pre-flight verdict and attempts, for a failing assertion."""
        record = self.store.get_run(run_id)
        if record is None:
            return f"run {run_id} is not recorded"
        attempts = "; ".join(
            f"{a.phase}#{a.attempt} {a.status}" + (f" ({a.error})" if a.error else "")
            for a in self.store.attempts(run_id)
        )
        return (
            f"run {run_id} {record.status}: pre-flight {record.preflight_status} "
            f"{record.preflight_message or ''}; attempts: {attempts}"
        )

    def phases(self, run_id: str) -> list[tuple[str, int, str]]:
        """(phase, attempt, status) of every recorded attempt, in order."""
        return [(a.phase, a.attempt, a.status) for a in self.store.attempts(run_id)]

    def workspace_volume(self, run_id: str) -> str:
        return run_volume_name(self.workspace, run_id)

    def in_workspace(self, run_id: str, script: str, *, if_missing: str | None = None) -> str:
        """Output of ``script`` run as the job uid with the run's workspace volume at /work.

        The volume must exist (the worker makes it before the run's first job): one made here
        by the engine would be root's and unlabelled, and the worker would refuse it. When it
        does not, ``if_missing`` is the answer (None: an error).
        """
        volume = self.workspace_volume(run_id)
        found = subprocess.run(
            ["docker", "volume", "inspect", volume], capture_output=True, check=False, timeout=60
        )
        if found.returncode != 0:
            if if_missing is None:
                raise LookupError(f"run {run_id} has no workspace volume {volume}")
            return if_missing
        done = subprocess.run(
            [
                "docker", "run", "--rm", "--network", "none", "--user", "1000:1000",
                "--entrypoint", "sh", "-v", f"{volume}:/work", JOB_IMAGE, "-c", script,
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )  # fmt: skip
        return done.stdout
