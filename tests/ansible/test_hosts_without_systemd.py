"""A host whose PID 1 is not systemd: Docker's restart policy keeps the broker and workers up.

One real host container of the Molecule host image started with `sleep` as PID 1 (so Ansible's
`ansible_service_mgr` is not systemd) and dockerd started by hand, converged by playbooks/site.yml
with two shards. There the roles write no unit, start every container themselves with the
`unless-stopped` policy, and re-create and restart the worker containers whose settings changed.
The tests check the host's engine and the broker, never the playbook's words.

New broker passwords restart the broker container too (the broker role's handler has a
Docker path besides its systemd one), so the workers, restarted with their new URLs, consume
again.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.hosts import (
    REPO,
    ansible_playbook,
    docker,
    fleet_inventory,
    recap_changed,
    remove_host,
    start_host_without_systemd,
    wait_for_consumers,
    wait_until,
)
from tests.ansible.conftest import copy_images

pytestmark = pytest.mark.integration

SITE = REPO / "playbooks" / "site.yml"
SHARDS = [0, 1]
CHANGED_SETTING: dict[str, object] = {"moonmind_codex_busy_max_retries": 5}  # 20 by default
CONTAINERS = ["moonmind-codex-broker"] + [f"moonmind-codex-worker-{s}" for s in SHARDS]


@dataclass
class PlainHost:
    name: str
    work: Path
    archives: Path
    # The settings of the last successful converge (a later test converges with them again
    # rather than back to the base first).
    applied: dict[str, object] | None = None

    def site(self, settings: dict[str, object] | None = None) -> str:
        inventory = self.work / f"hosts-{secrets.token_hex(3)}.yml"
        inventory.write_text(
            json.dumps(
                fleet_inventory(
                    self.name,
                    SHARDS,
                    len(SHARDS),
                    moonmind_codex_images_source="load",
                    moonmind_codex_images_archive_dir=str(self.archives),
                    **(settings or {}),
                )
            )
        )
        self.applied = None
        done = ansible_playbook(inventory, SITE)
        assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
        self.applied = dict(settings or {})
        return done.stdout


def state(host: str, container: str) -> dict[str, str]:
    out = docker(
        "exec", host, "docker", "inspect", "--format",
        "{{.State.Status}} {{.State.StartedAt}} {{.RestartCount}} {{.State.Pid}} "
        "{{.HostConfig.RestartPolicy.Name}}",
        container,
    ).stdout.split()  # fmt: skip
    return dict(zip(("status", "started", "restarts", "pid", "policy"), out, strict=True))


def running_ids(host: str) -> list[str]:
    return sorted(docker("exec", host, "docker", "ps", "-q", "--no-trunc").stdout.split())


def wait_until_consuming(host: str) -> None:
    wait_for_consumers(host, SHARDS)


@pytest.fixture(scope="module")
def plain_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlainHost]:
    name = f"mmc-test-nosystemd-{secrets.token_hex(3)}"
    work = tmp_path_factory.mktemp("nosystemd")
    try:
        start_host_without_systemd(name, images=("worker", "job", "broker"))
        archives = copy_images(name, work / "archives", "worker", "job", "broker")
        host = PlainHost(name, work, archives)
        host.site()
        wait_until_consuming(name)
        yield host
    finally:
        remove_host(name)


def test_without_systemd_docker_runs_and_restarts_the_containers_no_unit_is_written(
    plain_host: PlainHost,
) -> None:
    host = plain_host.name
    assert docker("exec", host, "cat", "/proc/1/comm").stdout.strip() == "sleep"
    units = docker("exec", host, "ls", "/etc/systemd/system").stdout
    assert "moonmind-codex" not in units, units
    for container in CONTAINERS:
        found = state(host, container)
        assert (found["status"], found["policy"]) == ("running", "unless-stopped"), found
    wait_until_consuming(host)

    # A worker that dies (its main process killed, as by the kernel's OOM killer) comes back by
    # Docker's restart policy alone, and consumes its queue again; the other one is untouched.
    crashed, other = state(host, "moonmind-codex-worker-0"), state(host, "moonmind-codex-worker-1")
    docker("exec", host, "kill", "-KILL", crashed["pid"])
    wait_until(
        lambda: (
            (now := state(host, "moonmind-codex-worker-0"))["status"] == "running"
            and int(now["restarts"]) == int(crashed["restarts"]) + 1
        ),
        "Docker to restart the killed worker",
        120,
    )
    wait_until_consuming(host)
    assert state(host, "moonmind-codex-worker-1") == other


def test_without_systemd_a_changed_setting_restarts_every_worker_with_it_then_nothing_changes(
    plain_host: PlainHost,
) -> None:
    host = plain_host.name
    wait_until_consuming(host)
    broker = state(host, "moonmind-codex-broker")

    plain_host.site(CHANGED_SETTING)

    wait_until_consuming(host)
    for shard in SHARDS:
        name = f"moonmind-codex-worker-{shard}"
        after = state(host, name)
        assert (after["status"], after["policy"], after["restarts"]) == (
            "running",
            "unless-stopped",
            "0",
        ), after
        env = docker(
            "exec", host, "docker", "inspect", "--format",
            "{{range .Config.Env}}{{println .}}{{end}}", name,
        ).stdout.split()  # fmt: skip
        assert "MOONMIND_CODEX_BUSY_MAX_RETRIES=5" in env
    assert state(host, "moonmind-codex-broker") == broker  # a worker setting: broker untouched

    # The same inventory again changes nothing and restarts nothing.
    settled = {c: state(host, c) for c in CONTAINERS}
    assert recap_changed(plain_host.site(CHANGED_SETTING)) == 0
    assert {c: state(host, c) for c in CONTAINERS} == settled


def test_without_systemd_new_broker_passwords_restart_the_broker_and_workers_consume_again(
    plain_host: PlainHost,
) -> None:
    host = plain_host.name
    # The settings an earlier test left (converged, so only the passwords change below); the
    # base inventory when that is unknown.
    settings = plain_host.applied
    if settings is None:
        plain_host.site()
        settings = {}
    wait_until_consuming(host)
    before = {c: state(host, c) for c in CONTAINERS}
    passwords = plain_host.work / "credentials" / "broker-passwords"
    for path in passwords.iterdir():
        path.unlink()

    plain_host.site(settings)

    # Each container started again (the broker with the new users file, each worker with its
    # new URL), by the playbook, not by a crash loop of Docker's restart policy.
    for container in CONTAINERS:
        after = state(host, container)
        assert after["started"] != before[container]["started"], container
        assert (after["status"], after["restarts"]) == ("running", before[container]["restarts"])
    wait_until_consuming(host)
