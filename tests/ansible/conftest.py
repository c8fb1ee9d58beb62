"""Fresh systemd + Docker hosts (the Molecule host image) for playbook tests."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.hosts import REPO, docker, remove_host, start_host

__all__ = ["REPO", "docker"]


@pytest.fixture
def fresh_host() -> Iterator[str]:
    name = f"mmc-test-fresh-{secrets.token_hex(3)}"
    try:
        start_host(name)
        yield name
    finally:
        remove_host(name)


def copy_images(host: str, archive_dir: Path, *names: str) -> Path:
    """The project's ``names`` images in ``host``'s engine, and a load-mode archive directory.

    The images role (``moonmind_codex_images_source: load``) loads an archive only when the
    host's image id differs from ``<name>.tar.id``; the images are already there, so each
    ``<name>.tar`` stays empty and is never read.
    """
    archive_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        image = f"moonmind-codex/{name}:latest"
        with subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE) as save:
            subprocess.run(
                ["docker", "exec", "-i", host, "docker", "load", "-q"],
                stdin=save.stdout,
                check=True,
                capture_output=True,
                timeout=600,
            )
        assert save.returncode == 0, f"docker save {image} failed"
        image_id = docker(
            "exec", host, "docker", "image", "inspect", "--format", "{{.Id}}", image
        ).stdout.strip()
        (archive_dir / f"{name}.tar.id").write_text(image_id)
        (archive_dir / f"{name}.tar").write_text("")
    return archive_dir


@pytest.fixture
def host_images() -> Callable[..., Path]:
    """``copy_images(host, archive_dir, *names)``: a fresh host gets images without a build."""
    return copy_images
