"""`site.yml --check --diff` on a brand-new systemd + Docker host runs through, changes nothing.

The preview an operator runs before the first deploy: the engine has none of the images,
units, volumes or containers yet.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.hosts import REPO, ansible_playbook, docker, fleet_inventory_of, write_inventory

pytestmark = pytest.mark.integration


def test_check_mode_on_a_new_host_runs_through_and_changes_nothing(
    fresh_host: str, tmp_path: Path
) -> None:
    inventory = write_inventory(
        tmp_path / "hosts.yml",
        fleet_inventory_of(
            {fresh_host: [0, 1]},
            fresh_host,
            2,
            moonmind_codex_images_source="load",
            moonmind_codex_images_archive_dir=str(tmp_path / "archives"),
            moonmind_codex_broker_password="not-a-secret",
        ),
    )
    archives = tmp_path / "archives"
    archives.mkdir()
    for image in ("worker", "job", "broker"):  # ids only: check mode loads nothing
        image_id = docker(
            "image", "inspect", "--format", "{{.Id}}", f"moonmind-codex/{image}:latest"
        ).stdout.strip()
        (archives / f"{image}.tar.id").write_text(image_id)
        (archives / f"{image}.tar").write_text("")
    done = ansible_playbook(inventory, REPO / "playbooks" / "site.yml", "--check", "--diff")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "failed=0" in done.stdout.split("PLAY RECAP")[-1]
    assert "moonmind-codex-worker@.service" in done.stdout  # the diff shows the unit it would add
    assert docker("exec", fresh_host, "docker", "ps", "-aq").stdout.strip() == ""
    assert docker("exec", fresh_host, "docker", "volume", "ls", "-q").stdout.strip() == ""
    assert docker("exec", fresh_host, "docker", "images", "-q").stdout.strip() == ""
    units = docker("exec", fresh_host, "ls", "/etc/systemd/system").stdout
    assert "moonmind-codex" not in units
