"""Fresh systemd + Docker hosts (the Molecule host image) for playbook tests."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.hosts import (
    REPO,
    SEED_IMAGES,
    docker,
    image_id,
    load_images,
    remove_host,
    start_host,
)

__all__ = ["REPO", "docker"]


def _new_host(images: tuple[str, ...]) -> Iterator[str]:
    name = f"mmc-test-fresh-{secrets.token_hex(3)}"
    try:
        start_host(name, images=images)
        yield name
    finally:
        remove_host(name)


@pytest.fixture
def fresh_host() -> Iterator[str]:
    """A new host whose engine has no images."""
    yield from _new_host(())


@pytest.fixture
def fresh_host_with_images() -> Iterator[str]:
    """A new host whose engine starts with the worker, job and broker images (image store)."""
    yield from _new_host(SEED_IMAGES)


def copy_images(host: str, archive_dir: Path, *names: str) -> Path:
    """The project's ``names`` images in ``host``'s engine, and a load-mode archive directory.

    A host started with ``images=`` already has them (from the shared image store); others get
    them loaded here. The images role (``moonmind_codex_images_source: load``) loads an archive
    only when the host's image id differs from ``<name>.tar.id``; the images are already
    there, so each ``<name>.tar`` stays empty and is never read.
    """
    archive_dir.mkdir(parents=True, exist_ok=True)
    load_images(host, *names)
    for name in names:
        found = image_id(f"moonmind-codex/{name}:latest", host)
        assert found, f"image moonmind-codex/{name}:latest is not in the engine of {host}"
        (archive_dir / f"{name}.tar.id").write_text(found)
        (archive_dir / f"{name}.tar").write_text("")
    return archive_dir


@pytest.fixture
def host_images() -> Callable[..., Path]:
    """``copy_images(host, archive_dir, *names)``: a fresh host gets images without a build."""
    return copy_images
