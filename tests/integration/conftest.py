"""Fixtures on the real Docker engine, the real images and the real Codex CLI.

Missing components fail the run (they never skip): run `scripts/setup.sh` first.
Every Docker object made here has a unique ``mmc-test-`` name and is removed afterwards:
other people run tests on the same engine at the same time.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from harness.broker import BROKER_IMAGE
from harness.logins import CODEX_HOME, JOB_IMAGE, api_key_login, run_in_volume
from moonmind_codex.settings import Settings
from tests.unit.helpers import chatgpt_auth

pytestmark = pytest.mark.integration

WORKER_IMAGE = "moonmind-codex/worker:latest"
TEST_LABEL = "io.moonmind.codex.test"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def client() -> Any:
    """The real engine, with the project's images present (a failure, never a skip)."""
    try:
        engine = docker.from_env(timeout=60)
        engine.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"the Docker engine does not answer ({exc}); run scripts/setup.sh")
    for image in (JOB_IMAGE, WORKER_IMAGE, BROKER_IMAGE):
        try:
            engine.images.get(image)
        except docker.errors.ImageNotFound:
            pytest.fail(f"image {image} is missing; run scripts/setup.sh")
    try:
        engine.networks.get(Settings().job_network)
    except docker.errors.NotFound:
        pytest.fail(f"network {Settings().job_network} (for jobs) is missing; run scripts/setup.sh")
    return engine


def unique(prefix: str) -> str:
    return f"mmc-test-{prefix}-{secrets.token_hex(4)}"


def in_volume(volume: str, script: str, *, user: str = "1000:1000") -> str:
    """Output of ``script`` run in the volume; fails the test when the script fails."""
    done = run_in_volume(volume, script, user=user)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def write_auth(
    volume: str, data: dict[str, Any] | bytes, *, mode: str = "600", owner: str = "1000:1000"
) -> None:
    """Put ``data`` in the volume as auth.json with that mode and owner (root dir 1000, 0700)."""
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    done = run_in_volume(
        volume,
        f"cat > {CODEX_HOME}/auth.json && chmod {mode} {CODEX_HOME}/auth.json && "
        f"chown {owner} {CODEX_HOME}/auth.json && chown 1000:1000 {CODEX_HOME} && "
        f"chmod 700 {CODEX_HOME}",
        user="0:0",
        stdin=raw,
    )
    assert done.returncode == 0, done.stderr


# States a test can ask a fresh auth volume to be in. "empty" is a brand-new volume: mounted
# on the image's /home/app/.codex it takes 1000:1000 0700 and holds no login.
VOLUME_STATES: dict[str, Callable[[str], object]] = {
    # Provisioned like the playbook leaves it: the root 1000:1000, 0700 (the first mount copies
    # the image's directory onto the empty volume; product containers mount with no_copy).
    "empty": lambda v: in_volume(v, "true"),
    "api_key": api_key_login,
    "chatgpt": lambda v: write_auth(v, chatgpt_auth(access_exp_days=1, last_refresh_days=1)),
    "chatgpt_expired_access": lambda v: write_auth(
        v, chatgpt_auth(access_exp_days=-3, last_refresh_days=2)
    ),
    "chatgpt_old_refresh": lambda v: write_auth(v, chatgpt_auth(last_refresh_days=30)),
    "malformed": lambda v: write_auth(v, b'{"tokens": {'),
    "empty_object": lambda v: write_auth(v, {}),
    "root_owned_file": lambda v: write_auth(v, chatgpt_auth(), owner="0:0"),
    "file_mode_0644": lambda v: write_auth(v, chatgpt_auth(), mode="644"),
    "dir_mode_0755": lambda v: (
        write_auth(v, chatgpt_auth()),
        in_volume(v, f"chmod 755 {CODEX_HOME}"),
    ),
    # Not writable by the job uid: the CLI could not write refreshed tokens back.
    "root_owned_dir": lambda v: (
        write_auth(v, chatgpt_auth()),
        in_volume(v, f"chown 0:0 {CODEX_HOME} && chmod 755 {CODEX_HOME}", user="0:0"),
    ),
    "dir_mode_0500": lambda v: (
        write_auth(v, chatgpt_auth()),
        in_volume(v, f"chmod 500 {CODEX_HOME}"),
    ),
}


class VolumeFactory:
    """Makes uniquely named volumes in a given state and removes them (and their users)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.created: list[str] = []
        self.prefixes: list[str] = []

    def __call__(self, prefix: str = "auth", state: str = "empty") -> str:
        return self.named(unique(prefix), state)

    def named(self, name: str, state: str = "empty") -> str:
        """A volume with exactly this name (for a volume template), in ``state``."""
        self.engine.volumes.create(name, labels={TEST_LABEL: "1"})
        self.created.append(name)
        VOLUME_STATES[state](name)
        return name

    def workspace_prefix(self) -> str:
        """A fresh prefix for run workspace volumes; the volumes the code makes under it go too."""
        prefix = unique("ws") + "-"
        self.prefixes.append(prefix)
        return prefix

    def cleanup(self) -> None:
        for prefix in self.prefixes:
            found = self.engine.volumes.list(filters={"name": prefix})
            self.created += [v.name for v in found if v.name.startswith(prefix)]
        for name in self.created:
            for container in self.engine.containers.list(all=True, filters={"volume": name}):
                container.remove(force=True)
            with contextlib.suppress(docker.errors.NotFound):
                self.engine.volumes.get(name).remove(force=True)


@pytest.fixture
def make_volume(client: Any) -> Iterator[VolumeFactory]:
    factory = VolumeFactory(client)
    yield factory
    factory.cleanup()


@pytest.fixture(scope="module")
def module_volume(client: Any) -> Iterator[VolumeFactory]:
    """For volumes that several tests of a module only read (saves a login per test)."""
    factory = VolumeFactory(client)
    yield factory
    factory.cleanup()


@pytest.fixture
def settings_for(tmp_path: Path, make_volume: VolumeFactory) -> Callable[..., Settings]:
    """Settings whose shard 0 (or ``shard``) uses the given auth volume.

    Each call gets its own prefix of run workspace volumes and the test's own artifacts
    directory.
    """

    def build(volume: str, shard: int = 0, **changes: Any) -> Settings:
        values: dict[str, Any] = {
            "shard_count": 3,
            "shard": shard,
            "auth_volume_override": volume,
            "host_name": "test-host",
            "workspace_volume_prefix": make_volume.workspace_prefix(),
            "artifacts_dir": tmp_path / "artifacts",
            "audit_log": tmp_path / "audit.jsonl",
            "preflight_timeout_seconds": 60.0,
        }
        values.update(changes)
        return Settings().with_overrides(**values)  # validated like loaded settings

    return build
