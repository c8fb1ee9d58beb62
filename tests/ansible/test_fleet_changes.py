"""Changing a converged fleet: preview, growth, restarts, roll-out, pull failures and purge.

One real systemd + Docker host, converged once for the module by playbooks/site.yml (the broker
and three shard workers under their units, each shard's volume signed in). Each test first brings
the fleet to the inventory it starts from (`FleetHost.ensure`, a no-op when the previous test left
it there, so any test also runs alone), changes the inventory as an operator would, re-runs the
playbook and checks the host itself: units (systemd's InvocationID changes on every start of a
unit and only then), containers, images, volumes and the logins' bytes, and the broker's consumers.
The tests run in file order because converges are expensive, not because they need it; the two
teardown tests come last since they take the fleet away.

"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness.hosts import (
    REPO,
    ansible_playbook,
    docker,
    fleet_inventory,
    queue_consumers,
    recap_changed,
    remove_host,
    start_host,
    unit_properties,
    wait_for_consumers,
    wait_until,
)
from tests.ansible.conftest import copy_images

pytestmark = pytest.mark.integration

SITE = REPO / "playbooks" / "site.yml"
TEARDOWN = REPO / "playbooks" / "teardown.yml"
CONFIG_DIR = "/etc/moonmind-codex"
WORKER_IMAGE = "moonmind-codex/worker:latest"
JOB_IMAGE = "moonmind-codex/job:latest"
BASE: dict[str, Any] = {"shards": 3}
BROKER_UNIT = "moonmind-codex-broker.service"
CHANGED_SETTING = {"moonmind_codex_busy_max_retries": 5}  # 20 by default
# Where the host's own engine pulls from in the roll-out tests: a registry served on its loopback.
REGISTRY_PORT = 5000


def unit_name(shard: int) -> str:
    return f"moonmind-codex-worker@{shard}.service"


@dataclass
class FleetHost:
    name: str
    work: Path
    archives: Path
    # The inventory values the host was last converged to (None: unknown, converge again).
    applied: dict[str, Any] | None = None
    registry: str = ""
    runs: list[str] = field(default_factory=list)

    def inventory(self, **values: Any) -> Path:
        shards = int(values["shards"])
        fleet_vars: dict[str, Any] = {
            "moonmind_codex_images_source": "load",
            "moonmind_codex_images_archive_dir": str(self.archives),
        }
        if values.get("tag"):
            fleet_vars |= {
                "moonmind_codex_images_source": "pull",
                "moonmind_codex_images_registry": values.get("registry", self.registry),
                "moonmind_codex_images_tag": values["tag"],
            }
        fleet_vars |= values.get("settings", {})
        if values.get("purge"):
            fleet_vars["moonmind_codex_purge_removed_volumes"] = True
        path = self.work / f"hosts-{secrets.token_hex(3)}.yml"
        path.write_text(
            json.dumps(fleet_inventory(self.name, list(range(shards)), shards, **fleet_vars))
        )
        return path

    def values(self, **changes: Any) -> dict[str, Any]:
        """The last applied values with ``changes``; the purge flag only when asked for."""
        applied = {k: v for k, v in (self.applied or BASE).items() if k != "purge"}
        return {**applied, **changes}

    def run(self, playbook: Path, *args: str, **values: Any) -> subprocess.CompletedProcess[str]:
        done = ansible_playbook(self.inventory(**values), playbook, *args)
        self.runs.append(f"{playbook.name} {args} {values}: rc={done.returncode}")
        return done

    def converge(self, **changes: Any) -> subprocess.CompletedProcess[str]:
        """site.yml with the last applied values and ``changes``; it must succeed."""
        values = self.values(**changes)
        self.applied = None
        done = self.run(SITE, **values)
        assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
        self.applied = values
        wait_for_consumers(self.name, range(int(values["shards"])))
        return done

    def ensure(self, **needed: Any) -> None:
        """Converge to ``needed`` (on top of the last applied values) unless already there."""
        if self.applied is None or any(self.applied.get(k) != v for k, v in needed.items()):
            self.converge(**needed)


def starts(host: str, shards: range | list[int]) -> dict[int, str]:
    """Each shard unit's InvocationID: a new one on every start, empty when never started."""
    return {s: unit_properties(host, unit_name(s), "InvocationID")["InvocationID"] for s in shards}


def running(host: str, shard: int) -> dict[str, str]:
    return unit_properties(host, unit_name(shard), "ActiveState", "SubState", "NRestarts")


def volumes(host: str) -> list[str]:
    return sorted(docker("exec", host, "docker", "volume", "ls", "-q").stdout.split())


# Made and removed by the running workers themselves (a keep-alive check reads a login with a
# probe container), never by a playbook: not part of the state a run must leave alone.
TRANSIENT = ("moonmind-codex-probe-", "moonmind-codex-job-", "moonmind-codex-workspace-")


def containers(host: str) -> dict[str, str]:
    """Name -> id of every lasting container on the host's engine."""
    out = docker("exec", host, "docker", "ps", "-a", "--format", "{{.Names}} {{.ID}}").stdout
    found = dict(line.split() for line in out.splitlines() if line.strip())
    return {name: cid for name, cid in found.items() if not name.startswith(TRANSIENT)}


def image_id(host: str, image: str) -> str:
    return docker(
        "exec", host, "docker", "image", "inspect", "--format", "{{.Id}}", image
    ).stdout.strip()


def container_image(host: str, container: str) -> str:
    return docker(
        "exec", host, "docker", "inspect", "--format", "{{.Image}}", container
    ).stdout.strip()


def file_on(host: str, path: str) -> str:
    return docker("exec", host, "cat", path).stdout


def sign_in(host: str, shard: int) -> None:
    """An auth.json of the shard's own in its volume (as the job uid), standing for a login."""
    login = json.dumps({"OPENAI_API_KEY": f"sk-test-shard-{shard}-{secrets.token_hex(4)}"})
    docker(
        "exec", host, "docker", "run", "--rm", "--network=none", "--user=1000:1000",
        "--entrypoint=sh", f"--volume=codex_auth_{shard}:/c", JOB_IMAGE,
        "-c", 'umask 077 && printf %s "$1" > /c/auth.json', "sh", login,
    )  # fmt: skip


def logins(host: str, shards: range | list[int]) -> dict[int, str]:
    """Each shard's auth.json as digest, size and modification time (empty if none)."""
    found = {}
    for shard in shards:
        found[shard] = docker(
            "exec", host, "docker", "run", "--rm", "--network=none", "--user=0:0",
            "--entrypoint=sh", f"--volume=codex_auth_{shard}:/c:ro", JOB_IMAGE,
            "-c", "sha256sum /c/auth.json && stat -c '%s %Y %u %a' /c/auth.json",
            check=False,
        ).stdout  # fmt: skip
    return found


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetHost]:
    name = f"mmc-test-changes-{secrets.token_hex(3)}"
    work = tmp_path_factory.mktemp("changes")
    try:
        start_host(name, images=("worker", "job", "broker"))
        archives = copy_images(name, work / "archives", "worker", "job", "broker")
        host = FleetHost(name, work, archives)
        host.converge(**BASE)
        for shard in range(BASE["shards"]):
            sign_in(name, shard)
        yield host
    finally:
        docker("rm", "-f", f"{name}-registry", check=False)
        docker("volume", "rm", "-f", f"{name}-registry", check=False)
        remove_host(name)


def test_check_mode_on_a_changed_inventory_shows_the_change_and_changes_nothing(
    fleet: FleetHost,
) -> None:
    # A changed worker setting: fleet.env changes, so would every worker container and unit.
    fleet.ensure(shards=3)
    before = host_state(fleet)

    preview = fleet.run(SITE, "--check", "--diff", **fleet.values(settings=CHANGED_SETTING))

    assert preview.returncode == 0, preview.stdout[-5000:] + preview.stderr[-2000:]
    assert "failed=0" in preview.stdout.rsplit("PLAY RECAP", maxsplit=1)[-1]
    assert recap_changed(preview.stdout) > 0
    # What it would do: the new value in fleet.env, and a restart of the shards.
    assert "-MOONMIND_CODEX_BUSY_MAX_RETRIES=20" in preview.stdout, preview.stdout[-5000:]
    assert "+MOONMIND_CODEX_BUSY_MAX_RETRIES=5" in preview.stdout
    assert re.search(
        r"TASK \[moonmind_codex_workers : Note the shards to restart\] \**\nchanged: ",
        preview.stdout,
    ), preview.stdout[-5000:]
    assert host_state(fleet) == before


def test_check_mode_on_a_grown_inventory_previews_the_new_shard_and_changes_nothing(
    fleet: FleetHost,
) -> None:
    fleet.ensure(shards=3)
    before = host_state(fleet)
    credentials = sorted(p.name for p in (fleet.work / "credentials").rglob("*"))

    preview = fleet.run(SITE, "--check", "--diff", **fleet.values(shards=4))

    assert preview.returncode == 0, preview.stdout[-5000:] + preview.stderr[-2000:]
    assert "failed=0" in preview.stdout.rsplit("PLAY RECAP", maxsplit=1)[-1]
    # What it would do: a password for the new shard's broker user, its volume, its worker.
    for task in (
        r"moonmind_codex_credentials : One password per broker user \(made once, never printed\)",
        r"moonmind_codex_auth_volumes : [^\]]*",
        r"moonmind_codex_workers : Worker container per shard",
    ):
        assert re.search(rf"TASK \[{task}\] \**\n(?:[^\n]*\n)*?changed: ", preview.stdout), task
    assert "+MOONMIND_CODEX_SHARD_COUNT=4" in preview.stdout
    # The login check ran with the host's current settings, which know no shard 3, and said so.
    assert "check mode: the login check could not run with" in preview.stdout
    assert host_state(fleet) == before
    assert sorted(p.name for p in (fleet.work / "credentials").rglob("*")) == credentials


def test_growing_from_three_to_four_shards_adds_the_shard_and_keeps_every_login(
    fleet: FleetHost,
) -> None:
    fleet.ensure(shards=3)
    before_starts = starts(fleet.name, range(3))
    before_logins = logins(fleet.name, range(3))
    assert all(before_logins.values()), before_logins

    fleet.converge(shards=4)

    assert "codex_auth_3" in volumes(fleet.name)
    owner = docker(
        "exec", fleet.name, "docker", "run", "--rm", "--network=none", "--user=0:0",
        "--entrypoint=stat", "--volume=codex_auth_3:/c:ro", JOB_IMAGE, "-c", "%u:%g %a", "/c",
    ).stdout.strip()  # fmt: skip
    assert owner == "1000:1000 700"
    assert running(fleet.name, 3)["ActiveState"] == "active"
    enabled = docker("exec", fleet.name, "systemctl", "is-enabled", unit_name(3), check=False)
    assert enabled.stdout.strip() == "enabled"
    assert queue_consumers(fleet.name).get("codex-3") == 1
    # The old shards' logins are byte for byte what they were (same digest, size, mtime).
    assert logins(fleet.name, range(3)) == before_logins
    # Every old shard was restarted once onto the new count (routing needs it), as was planned:
    # a worker still routing with 3 shards would send keys to the wrong volume.
    after_starts = starts(fleet.name, range(3))
    assert all(after_starts[s] != before_starts[s] for s in range(3)), (before_starts, after_starts)
    for shard in range(4):
        env = docker(
            "exec", fleet.name, "docker", "inspect", "--format",
            "{{range .Config.Env}}{{println .}}{{end}}", f"moonmind-codex-worker-{shard}",
        ).stdout.split()  # fmt: skip
        assert "MOONMIND_CODEX_SHARD_COUNT=4" in env
        assert running(fleet.name, shard)["NRestarts"] == "0"  # started, never crashed


def test_only_the_shard_whose_container_drifted_is_restarted(fleet: FleetHost) -> None:
    fleet.ensure(shards=4)
    # Someone gave shard 1's worker a Docker restart policy by hand: it would fight its unit.
    docker("exec", fleet.name, "docker", "update", "--restart=always", "moonmind-codex-worker-1")
    before = starts(fleet.name, range(4))
    before_containers = containers(fleet.name)

    done = fleet.converge()

    policy = docker(
        "exec", fleet.name, "docker", "inspect", "--format",
        "{{.HostConfig.RestartPolicy.Name}}", "moonmind-codex-worker-1",
    ).stdout.strip()  # fmt: skip
    assert policy in {"no", ""}
    after = starts(fleet.name, range(4))
    assert after[1] != before[1], "the drifted shard was not restarted"
    assert {s: after[s] for s in (0, 2, 3)} == {s: before[s] for s in (0, 2, 3)}, (
        "a shard whose container did not change was restarted",
        done.stdout[-3000:],
    )
    for shard in (0, 2, 3):
        name = f"moonmind-codex-worker-{shard}"
        assert containers(fleet.name)[name] == before_containers[name]
    assert running(fleet.name, 1)["ActiveState"] == "active"


def test_new_broker_passwords_restart_the_broker_and_every_shard_and_each_consumes_again(
    fleet: FleetHost,
) -> None:
    fleet.ensure(shards=4)
    before = starts(fleet.name, range(4))
    broker_before = unit_properties(fleet.name, BROKER_UNIT, "InvocationID")
    before_containers = containers(fleet.name)
    url_files = [
        f"{CONFIG_DIR}/broker_url",
        *(f"{CONFIG_DIR}/broker-urls/shard-{s}" for s in range(4)),
    ]
    old_urls = [docker("exec", fleet.name, "cat", path).stdout for path in url_files]

    # Rotation as the runbook has it: delete the controller's passwords; the next run makes new
    # ones, gives the broker their hashes and every worker its new URL.
    passwords = fleet.work / "credentials" / "broker-passwords"
    rotated = sorted(p.name for p in passwords.iterdir())
    assert rotated == sorted(
        ["codex-producer", "codex-app-worker", *(f"codex-shard-{s}" for s in range(4))]
    )
    for path in passwords.iterdir():
        path.unlink()
    fleet.converge()  # waits for every consumer, each logged in with its new password

    new_urls = [docker("exec", fleet.name, "cat", path).stdout for path in url_files]
    assert all(new != old for new, old in zip(new_urls, old_urls, strict=True))
    assert unit_properties(fleet.name, BROKER_UNIT, "InvocationID") != broker_before
    after = starts(fleet.name, range(4))
    assert all(after[s] != before[s] for s in range(4)), (before, after)
    # The containers are the same (the secret is a file they read): only their units restarted.
    workers = {n: i for n, i in containers(fleet.name).items() if "worker" in n}
    assert workers == {n: i for n, i in before_containers.items() if "worker" in n}
    # Between the broker's restart and theirs a worker still holding its old password may be
    # refused and restarted by systemd (Restart=on-failure): harmless, so not counted. What must
    # hold is that every shard's process started after the broker took the new passwords.
    since = "ExecMainStartTimestampMonotonic"
    broker_started = int(unit_properties(fleet.name, BROKER_UNIT, since)[since])
    for shard in range(4):
        assert running(fleet.name, shard)["ActiveState"] == "active"
        assert int(unit_properties(fleet.name, unit_name(shard), since)[since]) > broker_started


def start_registry(fleet: FleetHost) -> str:
    """A registry on the host's loopback (an engine pulls over plain HTTP from loopback only)."""
    if not fleet.registry:
        name = f"{fleet.name}-registry"
        docker(
            "run", "-d", "--name", name, f"--network=container:{fleet.name}",
            "-v", f"{name}:/var/lib/docker-registry", "moonmind-codex/registry:latest",
        )  # fmt: skip
        probe = f"import urllib.request as u; u.urlopen('http://127.0.0.1:{REGISTRY_PORT}/v2/')"
        wait_until(
            lambda: docker("exec", fleet.name, "python3", "-c", probe, check=False).returncode == 0,
            "the registry on the host's loopback",
            60,
        )
        fleet.registry = f"127.0.0.1:{REGISTRY_PORT}/mmc-release"
    return fleet.registry


def publish_worker(fleet: FleetHost, tag: str) -> str:
    """A new worker release: the current worker plus a label, pushed as ``worker:TAG``.

    Built and pushed by the host's engine; the local tag is then removed so that the playbook
    must pull it. Only the label differs, so the pull fetches a manifest and a config.
    """
    registry = start_registry(fleet)
    image = f"{registry}/worker:{tag}"
    subprocess.run(
        ["docker", "exec", "-i", fleet.name, "docker", "build", "-q", "-t", image, "-"],
        input=f"FROM {WORKER_IMAGE}\nLABEL io.moonmind.codex.test-release={tag}\n",
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    built = image_id(fleet.name, image)
    docker("exec", fleet.name, "docker", "push", "-q", image)
    docker("exec", fleet.name, "docker", "rmi", image)
    return built


def already_on_host(fleet: FleetHost, tag: str, *names: str) -> None:
    """``REGISTRY/NAME:TAG`` of these images is present on the host, as after an earlier pull.

    The images role pulls only a tag the host does not have, so these releases of the job and
    broker images (unchanged in it) need no registry round trip here.
    """
    registry = start_registry(fleet)
    for name in names:
        docker("exec", fleet.name, "docker", "tag", f"moonmind-codex/{name}:latest",
               f"{registry}/{name}:{tag}")  # fmt: skip


def test_rolling_out_a_new_image_tag_moves_every_worker_onto_it_then_changes_nothing(
    fleet: FleetHost,
) -> None:
    fleet.ensure(shards=4)
    new_worker = publish_worker(fleet, "2.0")
    already_on_host(fleet, "2.0", "job", "broker")
    old_worker = image_id(fleet.name, WORKER_IMAGE)
    assert new_worker != old_worker
    before = starts(fleet.name, range(4))

    fleet.converge(tag="2.0")

    assert image_id(fleet.name, WORKER_IMAGE) == new_worker
    after = starts(fleet.name, range(4))
    for shard in range(4):
        assert container_image(fleet.name, f"moonmind-codex-worker-{shard}") == new_worker
        assert after[shard] != before[shard]
        assert running(fleet.name, shard)["ActiveState"] == "active"
    # The running worker is the new release's (its label), answering on its queue.
    label = docker(
        "exec", fleet.name, "docker", "inspect", "--format",
        '{{index .Config.Labels "io.moonmind.codex.test-release"}}', "moonmind-codex-worker-0",
    ).stdout.strip()  # fmt: skip
    assert label == "2.0"

    again = fleet.run(SITE, **fleet.values())
    assert again.returncode == 0, again.stdout[-4000:]
    assert recap_changed(again.stdout) == 0, again.stdout[-4000:]
    assert starts(fleet.name, range(4)) == after


def host_state(fleet: FleetHost) -> tuple[object, ...]:
    """What a preview must leave alone: volumes, containers, unit starts, settings, logins."""
    shards = range(int(fleet.values()["shards"]))
    return (
        volumes(fleet.name),
        containers(fleet.name),
        starts(fleet.name, shards),
        file_on(fleet.name, f"{CONFIG_DIR}/fleet.env"),
        docker("exec", fleet.name, "sha256sum", f"{CONFIG_DIR}/broker_url").stdout,
        logins(fleet.name, shards),
    )


def unchanged_fleet(fleet: FleetHost) -> tuple[dict[int, str], dict[str, str], list[str]]:
    return (
        starts(fleet.name, range(int(fleet.values()["shards"]))),
        containers(fleet.name),
        [image_id(fleet.name, f"moonmind-codex/{n}:latest") for n in ("worker", "job", "broker")],
    )


def test_a_release_missing_one_image_fails_naming_it_and_rolls_nothing(fleet: FleetHost) -> None:
    fleet.ensure(shards=4, tag="2.0")
    registry = start_registry(fleet)
    # Release 2.1 has a new worker but its job image was never pushed.
    publish_worker(fleet, "2.1")
    already_on_host(fleet, "2.1", "broker")
    before = unchanged_fleet(fleet)

    done = fleet.run(SITE, **fleet.values(tag="2.1"))

    assert done.returncode != 0
    failed = [line for line in done.stdout.splitlines() if line.startswith("failed:")]
    assert failed and all(f"{registry}/job:2.1" in line for line in failed), done.stdout[-4000:]
    assert "manifest unknown" in done.stdout or "not found" in done.stdout, done.stdout[-4000:]
    # The worker of 2.1 was pulled, but nothing uses it: no tag moved, no worker re-created.
    assert image_id(fleet.name, f"{registry}/worker:2.1") != before[2][0]
    assert unchanged_fleet(fleet) == before


def test_an_unreachable_registry_fails_naming_the_image_and_changes_nothing(
    fleet: FleetHost,
) -> None:
    fleet.ensure(shards=4)
    before = unchanged_fleet(fleet)
    nowhere = "127.0.0.1:5999/mmc-release"  # nothing listens there

    done = fleet.run(SITE, **fleet.values(tag="2.2", registry=nowhere))

    assert done.returncode != 0
    failed = [line for line in done.stdout.splitlines() if line.startswith("failed:")]
    assert failed, done.stdout[-4000:]
    assert f"{nowhere}/broker:2.2" in failed[0], done.stdout[-4000:]
    assert "connection refused" in done.stdout.lower(), done.stdout[-4000:]
    assert unchanged_fleet(fleet) == before


def test_a_shard_taken_off_the_host_keeps_its_login_until_a_purge_run(fleet: FleetHost) -> None:
    fleet.ensure(shards=4)
    sign_in(fleet.name, 3)
    kept = logins(fleet.name, range(4))

    fleet.converge(shards=3)  # shard 3 leaves the host: unit and container go, the login stays

    assert "moonmind-codex-worker-3" not in containers(fleet.name)
    assert running(fleet.name, 3)["ActiveState"] == "inactive"
    assert "codex_auth_3" in volumes(fleet.name)
    assert logins(fleet.name, range(4)) == kept

    # The runbook's last step of a move: when sure, a site run with the purge flag deletes it.
    fleet.converge(purge=True)

    assert "codex_auth_3" not in volumes(fleet.name)
    assert logins(fleet.name, range(3)) == {s: kept[s] for s in range(3)}


def test_teardown_keeps_the_logins_and_only_the_purge_flag_removes_them(
    fleet: FleetHost,
) -> None:
    fleet.ensure(shards=3)
    shards = range(3)
    kept = logins(fleet.name, shards)
    assert all(kept.values())
    # A run's workspace, as a worker makes it for a run's first phase.
    workspace = "moonmind_codex_run_teardown-keeps-me"
    docker(
        "exec", fleet.name, "docker", "volume", "create",
        "--label", "io.moonmind.codex.role=workspace",
        "--label", "io.moonmind.codex.run-id=teardown-keeps-me", workspace,
    )  # fmt: skip

    def networks() -> list[str]:
        return docker(
            "exec", fleet.name, "docker", "network", "ls", "--format", "{{.Name}}"
        ).stdout.split()

    assert "moonmind_codex_jobs" in networks()
    assert "MOONMIND-JOBS-FORWARD" in docker("exec", fleet.name, "iptables", "-S").stdout

    down = fleet.run(TEARDOWN, **fleet.values(purge=False))
    fleet.applied = None
    assert down.returncode == 0, down.stdout[-4000:]
    left = containers(fleet.name)
    assert not any(name.startswith("moonmind-codex-") for name in left), left
    assert all(running(fleet.name, s)["ActiveState"] == "inactive" for s in shards)
    assert logins(fleet.name, shards) == kept  # every login survived
    # The job network went, and with it the firewall's unit, chains and files.
    assert "moonmind_codex_jobs" not in networks()
    rules = docker("exec", fleet.name, "iptables", "-S").stdout
    assert "mmc-jobs0" not in rules and "MOONMIND-JOBS" not in rules, rules
    for path in (
        "/etc/systemd/system/moonmind-codex-job-firewall.service",
        "/usr/local/sbin/moonmind-codex-job-firewall",
        f"{CONFIG_DIR}/job-firewall.env",
    ):
        assert docker("exec", fleet.name, "test", "-e", path, check=False).returncode == 1, path

    # What a worker stopped in the middle of a keep-alive's login read leaves: its probe
    # container, exited, still on the volume (the engine will not delete a volume in use).
    leftover = "moonmind-codex-probe-2-left0ver"
    docker(
        "exec", fleet.name, "docker", "run", "--name", leftover, "--network=none",
        "--label", "io.moonmind.codex.role=probe",
        "--label", "io.moonmind.codex.volume=codex_auth_2",
        "--volume=codex_auth_2:/home/app/.codex", "--entrypoint=true", JOB_IMAGE,
    )  # fmt: skip
    purged = fleet.run(TEARDOWN, **fleet.values(purge=True))
    assert purged.returncode == 0, purged.stdout[-4000:]
    remaining = volumes(fleet.name)
    assert not any(v.startswith("codex_auth_") for v in remaining), remaining
    gone = docker("exec", fleet.name, "docker", "inspect", leftover, check=False)
    assert gone.returncode != 0, "the purge removed the fleet's container left on the volume"
    # Only the logins: the broker's data and the workspaces are not what the flag is about.
    assert {"moonmind_codex_broker_data", workspace} <= set(remaining)
