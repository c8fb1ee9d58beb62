"""Pull mode of the images role: a real registry and a brand-new host's own Docker engine.

The registry is the project's `registry` image. Its store is filled through this engine's
loopback, then served on the new host's loopback (sharing its network namespace), because Docker
pulls over plain HTTP only from loopback addresses without extra daemon configuration.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.hosts import (
    ansible_playbook,
    docker,
    hosts_inventory,
    recap_changed,
    write_inventory,
)

pytestmark = pytest.mark.integration

IMAGE = "worker"  # the smallest of the fleet's images
RELEASE_TAG = "1.0.0-test"


def wait_for_registry(*probe: str) -> None:
    """Until ``probe`` (a command printing the /v2/ status) says 200."""
    deadline = time.monotonic() + 60
    while True:
        done = subprocess.run(probe, capture_output=True, text=True, check=False, timeout=30)
        if done.stdout.strip() == "200":
            return
        assert time.monotonic() < deadline, f"registry did not answer: {done.stderr[-500:]}"
        time.sleep(0.5)


PROBE = (
    "import urllib.request as u, sys; "
    "print(u.urlopen('http://127.0.0.1:{port}/v2/', timeout=5).status)"
)


@pytest.fixture
def registry(fresh_host: str) -> Iterator[str]:
    tag = secrets.token_hex(3)
    store, pusher, server = (f"mmc-test-registry-{tag}-{part}" for part in ("store", "push", "srv"))
    repository = f"mmc-test-{tag}/{IMAGE}"
    try:
        docker(
            "run",
            "-d",
            "--name",
            pusher,
            "-p",
            "127.0.0.1::5000",
            "-v",
            f"{store}:/var/lib/docker-registry",
            "moonmind-codex/registry:latest",
        )
        port = docker("port", pusher, "5000/tcp").stdout.strip().rsplit(":", 1)[1]
        wait_for_registry(sys.executable, "-c", PROBE.format(port=port))
        pushed = f"127.0.0.1:{port}/{repository}:{RELEASE_TAG}"
        docker("tag", f"moonmind-codex/{IMAGE}:latest", pushed)
        try:
            docker("push", "-q", pushed)
        finally:
            docker("rmi", pushed, check=False)
        docker("rm", "-f", pusher)
        docker(
            "run",
            "-d",
            "--name",
            server,
            f"--network=container:{fresh_host}",
            "-v",
            f"{store}:/var/lib/docker-registry",
            "moonmind-codex/registry:latest",
        )
        wait_for_registry("docker", "exec", fresh_host, "python3", "-c", PROBE.format(port=5000))
        yield f"127.0.0.1:5000/mmc-test-{tag}"
    finally:
        docker("rm", "-f", pusher, server, check=False)
        docker("volume", "rm", "-f", store, check=False)


def run_images_role(
    host: str, host_vars: dict[str, object], roles: list[str], tmp_path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """ansible-playbook applying ``roles`` to ``host`` alone (its own engine via docker exec)."""
    inventory = write_inventory(tmp_path / "hosts.yml", hosts_inventory([host], **host_vars))
    playbook = tmp_path / "images.yml"
    playbook.write_text(json.dumps([{"hosts": "all", "roles": roles}]))
    return ansible_playbook(inventory, playbook, *args)


def changed_count(done: subprocess.CompletedProcess[str]) -> int:
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    return recap_changed(done.stdout)


def image_ids(*names: str, host: str | None = None) -> list[str]:
    where = ["exec", host, "docker"] if host else []
    return docker(*where, "image", "inspect", "--format", "{{.Id}}", *names).stdout.split()


def test_pull_mode_previews_then_pulls_and_tags_then_changes_nothing(
    fresh_host: str, registry: str, tmp_path: Path
) -> None:
    pull = {
        "moonmind_codex_images_source": "pull",
        "moonmind_codex_images_registry": registry,
        "moonmind_codex_images_tag": RELEASE_TAG,
        "moonmind_codex_images_names": [IMAGE],
    }
    roles = ["moonmind_codex_docker", "moonmind_codex_images"]

    preview = run_images_role(fresh_host, pull, roles, tmp_path, "--check", "--diff")
    assert changed_count(preview) > 0  # it shows the pull it would do
    assert docker("exec", fresh_host, "docker", "images", "-q").stdout.strip() == ""  # did nothing

    assert changed_count(run_images_role(fresh_host, pull, roles, tmp_path)) > 0
    expected = image_ids(f"moonmind-codex/{IMAGE}:latest")
    pulled = image_ids(
        f"{registry}/{IMAGE}:{RELEASE_TAG}", f"moonmind-codex/{IMAGE}:latest", host=fresh_host
    )
    assert pulled == expected * 2  # the pushed image, also under the name the fleet uses

    again = run_images_role(fresh_host, pull, roles, tmp_path)
    assert changed_count(again) == 0, again.stdout[-3000:]


def test_pull_mode_without_a_registry_fails_before_pulling(fresh_host: str, tmp_path: Path) -> None:
    pull = {"moonmind_codex_images_source": "pull", "moonmind_codex_images_names": [IMAGE]}
    done = run_images_role(fresh_host, pull, ["moonmind_codex_images"], tmp_path)
    assert done.returncode != 0
    assert "set moonmind_codex_images_registry" in done.stdout
    assert docker("exec", fresh_host, "docker", "images", "-q").stdout.strip() == ""
