"""What a verify test does to the converged scenario to set up its own state, and undo it.

The verify tests run in any order, alone or together: a test that needs a shard signed in (or
signed out) says so and gets it here, and a test that changes the fleet (a teardown) puts it
back as ``inventory/hosts.yml`` describes before the next one starts. The move is the exception:
it runs last and leaves the fleet moved, and the next verify puts it back before its first test.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import testinfra

SCENARIO = Path(__file__).resolve().parents[1]
REPO = SCENARIO.parents[1]
INVENTORY = SCENARIO / "inventory" / "hosts.yml"
sys.path.insert(0, str(REPO))
from harness.hosts import ansible_playbook  # noqa: E402

HOST_A, HOST_B, BROKER = "mmc-molecule-host-a", "mmc-molecule-host-b", "mmc-molecule-broker"
# Who owns which shard in inventory/hosts.yml (the converged fleet).
OWNERS = {0: HOST_A, 1: HOST_A, 2: HOST_B}
FAKE_KEY = "sk-test-molecule-NOT-A-REAL-KEY"
JOB_IMAGE = "moonmind-codex/job:latest"
CONFIG_DIR = "/etc/moonmind-codex"


def on(name: str) -> Any:
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")


def unique(label: str) -> str:
    """A run id no earlier run of the scenario (or of this test) has used."""
    return f"{label}-{uuid.uuid4().hex[:8]}"


def playbook(
    name: str, *args: str, inventory: Path = INVENTORY
) -> subprocess.CompletedProcess[str]:
    # The scenario inventory finds the image archives through MOLECULE_PROJECT_DIRECTORY.
    return ansible_playbook(
        inventory,
        REPO / "playbooks" / name,
        *args,
        timeout_s=900,
        extra_env={"MOLECULE_PROJECT_DIRECTORY": str(REPO)},
    )


def fleet_cli(host: Any, *args: str, stdin: str | None = None) -> Any:
    """``moonmind-codex ARGS`` in the worker image with the host's fleet.env (as the playbooks)."""
    gid = host.check_output("stat -c %g /var/run/docker.sock")
    run = (
        f"docker run --rm -i --network none --pull never --group-add {gid} "
        "-v /var/run/docker.sock:/var/run/docker.sock "
        f"-v {CONFIG_DIR}:{CONFIG_DIR}:ro --env-file {CONFIG_DIR}/fleet.env "
        f"moonmind-codex/worker:latest {' '.join(args)}"
    )
    if stdin is None:
        return host.run(f"{run} </dev/null")
    encoded = base64.b64encode(stdin.encode()).decode()
    return host.run(f"echo {encoded} | base64 -d | {run}")


def in_volume(host: Any, shard: int, command: str) -> Any:
    """``command`` in a throw-away job-image container with codex_auth_<shard> at /c."""
    return host.run(
        f"docker run --rm --network none --entrypoint sh -v codex_auth_{shard}:/c "
        f"{JOB_IMAGE} -c '{command}'"
    )


def has_login(host: Any, shard: int) -> bool:
    found = in_volume(host, shard, "test -e /c/auth.json")
    assert found.rc in (0, 1), found.stderr
    return found.rc == 0


def sign_in(shard: int, host_name: str | None = None) -> None:
    """A fake API-key login on the shard's volume (on its owner unless ``host_name``)."""
    host = on(host_name or OWNERS[shard])
    done = fleet_cli(host, "login", f"--shard={shard}", "--api-key-stdin", stdin=FAKE_KEY)
    assert done.rc == 0, done.stdout + done.stderr
    assert has_login(host, shard)


def sign_out(shard: int, host_name: str | None = None) -> None:
    host = on(host_name or OWNERS[shard])
    done = fleet_cli(host, "clear-login", f"--shard={shard}")
    assert done.rc == 0, done.stdout + done.stderr
    assert not has_login(host, shard)


def set_logins(wanted: dict[int, bool]) -> None:
    """Each listed shard signed in (True) or not (False) on its owner, whatever it was before."""
    for shard, signed_in in wanted.items():
        if has_login(on(OWNERS[shard]), shard) != signed_in:
            (sign_in if signed_in else sign_out)(shard)


SHARD_STATE = (
    "for s in {shards}; do echo $s"
    " $(systemctl is-enabled moonmind-codex-worker@$s 2>/dev/null | grep . || echo none)"
    " $(systemctl is-active moonmind-codex-worker@$s 2>/dev/null | grep . || echo none)"
    " $(docker inspect --format '{{{{.State.Status}}}}' moonmind-codex-worker-$s 2>/dev/null"
    " || echo no-container)"
    " $(docker volume inspect codex_auth_$s >/dev/null 2>&1 && echo volume || echo no-volume);"
    " done"
)


def as_converged() -> list[str]:
    """How the fleet differs from inventory/hosts.yml: units, containers, stray volumes."""
    differences = []
    for name in (HOST_A, HOST_B):
        shown = on(name).check_output(SHARD_STATE.format(shards=" ".join(map(str, OWNERS))))
        for line in shown.splitlines():
            shard, enabled, active, container, volume = line.split()
            owner = OWNERS[int(shard)]
            state = (enabled, active, container, volume)
            if owner == name and state != ("enabled", "active", "running", "volume"):
                differences.append(f"{name}: its shard {shard} is {state}")
            if owner != name and state[1:] != ("inactive", "no-container", "no-volume"):
                differences.append(f"{name}: shard {shard} of {owner} is {state}")
    return differences


def restore_fleet() -> None:
    """Converge with the scenario's inventory again if a test left the fleet otherwise.

    A volume that a move left on a host that no longer owns the shard is not removed by
    site.yml (logins are never purged by it): it is carried back to its owner and removed.
    """
    if as_converged() == []:
        return
    done = playbook("site.yml")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for name in (HOST_A, HOST_B):
        host = on(name)
        for shard, owner in OWNERS.items():
            if owner == name or host.run(f"docker volume inspect codex_auth_{shard}").rc != 0:
                continue
            login = in_volume(host, shard, "cat /c/auth.json 2>/dev/null || true").stdout
            if login and not has_login(on(owner), shard):
                json.loads(login)  # a login, not an error message
                done = fleet_cli(
                    on(owner), "login", f"--shard={shard}", "--from-file=-", stdin=login
                )
                assert done.rc == 0, done.stdout + done.stderr
            removed = host.run(f"docker volume rm codex_auth_{shard}")
            assert removed.rc == 0, removed.stderr
    assert as_converged() == [], as_converged()
