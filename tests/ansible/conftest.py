"""Fresh systemd + Docker hosts (the Molecule host image) for playbook tests."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

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
