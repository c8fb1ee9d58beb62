"""Fixtures on the real Docker engine, the real images and the real Codex CLI.

Missing components fail the run (they never skip): run `scripts/setup.sh` first.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from moonmind_codex.settings import Settings

pytestmark = pytest.mark.integration

JOB_IMAGE = "moonmind-codex/job:latest"
WORKER_IMAGE = "moonmind-codex/worker:latest"
BROKER_IMAGE = "moonmind-codex/broker:latest"
FAKE_API_KEY = "sk-test-NOT-A-REAL-KEY-0000"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def client() -> Any:
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
    return engine


def unique(prefix: str) -> str:
    return f"mmc-test-{prefix}-{secrets.token_hex(4)}"


@pytest.fixture
def make_volume(client: Any) -> Iterator[Callable[..., str]]:
    created: list[str] = []

    def make(prefix: str = "auth") -> str:
        name = unique(prefix)
        client.volumes.create(name, labels={"io.moonmind.codex.test": "1"})
        created.append(name)
        return name

    yield make
    for name in created:
        for container in client.containers.list(all=True, filters={"volume": name}):
            container.remove(force=True)
        client.volumes.get(name).remove(force=True)


def run_in_volume(
    volume: str, script: str, *, user: str = "1000:1000", stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """A throw-away job-image container with ``volume`` at /home/app/.codex."""
    return subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "-i",
            "--network",
            "none",
            "--user",
            user,
            "--entrypoint",
            "sh",
            "-v",
            f"{volume}:/home/app/.codex",
            JOB_IMAGE,
            "-c",
            script,
        ],
        input=stdin,
        capture_output=True,
        check=False,
        timeout=120,
    )


def api_key_login(volume: str) -> None:
    """A real `codex login --with-api-key`, the key on stdin (it is not checked online)."""
    done = run_in_volume(volume, "codex login --with-api-key", stdin=FAKE_API_KEY.encode())
    assert done.returncode == 0, done.stderr


def write_auth(
    volume: str, data: dict[str, Any] | bytes, *, mode: str = "600", owner: str = "1000:1000"
) -> None:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    done = run_in_volume(
        volume,
        f"cat > /home/app/.codex/auth.json && chmod {mode} /home/app/.codex/auth.json && "
        f"chown {owner} /home/app/.codex/auth.json && chown 1000:1000 /home/app/.codex",
        user="0:0",
        stdin=raw,
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture
def settings_for(tmp_path: Path, make_volume: Callable[..., str]) -> Callable[..., Settings]:
    """Settings whose shard 0 (or ``shard``) uses the given volume."""

    def build(volume: str, shard: int = 0, **changes: Any) -> Settings:
        workspace = make_volume("ws")
        values: dict[str, Any] = {
            "shard_count": 3,
            "shard": shard,
            "auth_volume_override": volume,
            "host_name": "test-host",
            "workspace_volume": workspace,
            "artifacts_dir": tmp_path / "artifacts",
            "audit_log": tmp_path / "audit.jsonl",
            "preflight_timeout_seconds": 60.0,
        }
        values.update(changes)
        return Settings(**values)

    return build
