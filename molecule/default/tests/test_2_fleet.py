"""Across the fleet, in order: login check, a login, then Codex tasks through the broker."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import testinfra

SCENARIO = Path(__file__).resolve().parents[1]
REPO = SCENARIO.parents[1]
INVENTORY = SCENARIO / "inventory" / "hosts.yml"
sys.path.insert(0, str(REPO))
from harness.hosts import ansible_playbook  # noqa: E402
from moonmind_codex.routing import shard_for_key  # noqa: E402

testinfra_hosts: list[str] = []  # the tests below address hosts explicitly

HOST_A, HOST_B, BROKER = "mmc-molecule-host-a", "mmc-molecule-host-b", "mmc-molecule-broker"
FAKE_KEY = "sk-test-molecule-NOT-A-REAL-KEY"


def on(name: str):
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")


def login_with_api_key(host, shard: int) -> None:
    gid = host.check_output("stat -c %g /var/run/docker.sock")
    cmd = (
        f"printf %s '{FAKE_KEY}' | docker run --rm -i --group-add {gid} "
        "-v /var/run/docker.sock:/var/run/docker.sock "
        f"-e MOONMIND_CODEX_HOST_NAME={host.backend.host} "
        f"moonmind-codex/worker:latest login --shard {shard} --api-key-stdin"
    )
    result = host.run(cmd)
    assert result.rc == 0, result.stdout + result.stderr


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


def recap_changed(output: str) -> dict[str, int]:
    return {
        host: int(n) for host, n in re.findall(r"(mmc-molecule-\S+)\s+:.*?changed=(\d+)", output)
    }


def task_sections(output: str) -> dict[str, str]:
    """A playbook's output, split per task: task name to everything it printed."""
    sections = {}
    for chunk in output.split("\nTASK [")[1:]:
        name, _, rest = chunk.partition("]")
        sections[name] = rest.split("\nPLAY ")[0]
    return sections


def login_check_table() -> dict[int, str]:
    done = playbook("login_check.yml")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = re.findall(r"(\d+)\s+codex_auth_\d+\s+(\S+)\s+(ok|warn|blocked)\b", done.stdout)
    assert rows, done.stdout[-3000:]
    return {int(shard): f"{host} {status}" for shard, host, status in rows}


def key_for(shard: int) -> str:
    return next(
        k for k in (f"molecule/repo-{i}" for i in range(1000)) if shard_for_key(k, 3) == shard
    )


def enqueue(from_host, run_id: str, shard: int) -> dict:
    out = from_host.check_output(
        f"docker exec moonmind-codex-worker-0 moonmind-codex enqueue --run-id {run_id} "
        f"--phase specify --repository {key_for(shard)} --timeout 120 --wait -- "
        "sh -c 'id -u; codex login status'"
    )
    return json.loads(out)


def test_1_login_check_reports_every_shard_not_logged_in() -> None:
    assert login_check_table() == {
        0: f"{HOST_A} blocked",
        1: f"{HOST_A} blocked",
        2: f"{HOST_B} blocked",
    }


def test_2_login_writes_auth_json_0600_owned_by_1000() -> None:
    host_a = on(HOST_A)
    login_with_api_key(host_a, 0)
    out = host_a.check_output(
        "docker run --rm --network none --entrypoint stat -v codex_auth_0:/c "
        "moonmind-codex/job:latest -c '%a %u:%g' /c/auth.json"
    )
    assert out.strip() == "600 1000:1000"


def test_3_login_check_tells_logged_in_from_not_logged_in() -> None:
    assert login_check_table() == {
        0: f"{HOST_A} ok",
        1: f"{HOST_A} blocked",
        2: f"{HOST_B} blocked",
    }


def test_4_codex_task_runs_on_the_owning_host_with_its_volume() -> None:
    host_a, host_b = on(HOST_A), on(HOST_B)
    login_with_api_key(host_b, 2)
    for shard, owner, host in ((0, HOST_A, host_a), (2, HOST_B, host_b)):
        run_id = f"molecule-run-{shard}"
        result = enqueue(host_a, run_id, shard)  # sent from host-a, through the broker host
        assert (result["queue"], result["shard"], result["volume"], result["host"]) == (
            f"codex-{shard}",
            shard,
            f"codex_auth_{shard}",
            owner,
        )
        assert (result["outcome"], result["preflight_status"]) == ("succeeded", "ok")
        log = host.file(result["log_path"]).content_string
        assert log.splitlines()[0] == "1000" and "API key configured" in log
        audit = [
            json.loads(line)
            for line in host.file(
                "/var/lib/moonmind-codex/audit/codex-audit.jsonl"
            ).content_string.splitlines()
        ]
        mine = [r for r in audit if r["run_id"] == run_id]
        assert [r["event"] for r in mine] == ["codex_phase_started", "codex_phase_finished"]
        assert {(r["queue"], r["shard"], r["volume"], r["host"]) for r in mine} == {
            (f"codex-{shard}", shard, f"codex_auth_{shard}", owner)
        }


def test_5_phase_on_a_shard_without_login_is_blocked_on_its_host() -> None:
    host_a = on(HOST_A)
    result = host_a.run(
        "docker exec moonmind-codex-worker-0 moonmind-codex enqueue --run-id molecule-blocked "
        f"--phase specify --repository {key_for(1)} --timeout 60 --wait -- true"
    )
    assert result.rc != 0
    text = result.stdout + result.stderr
    assert "shard 1" in text and "codex_auth_1" in text and "moonmind-codex login --shard 1" in text


def test_6_broker_has_one_consumer_per_shard_queue() -> None:
    out = on(BROKER).check_output(
        "docker exec moonmind-codex-broker rabbitmqctl -q list_queues name consumers"
    )
    consumers = dict(
        line.split()
        for line in out.splitlines()
        if line.startswith("codex-") and "pidbox" not in line
    )
    assert consumers == {"codex-0": "1", "codex-1": "1", "codex-2": "1"}


def test_7_check_mode_runs_through_and_changes_nothing() -> None:
    done = playbook("site.yml", "--check", "--diff")
    assert done.returncode == 0, done.stdout[-3000:]
    changed = recap_changed(done.stdout)
    assert set(changed) == {HOST_A, HOST_B, BROKER} and set(changed.values()) == {0}


def test_8_teardown_keeps_logins_and_site_restores_the_fleet() -> None:
    host_a = on(HOST_A)
    before = host_a.check_output(
        "docker run --rm --network none --entrypoint sha256sum -v codex_auth_0:/c "
        "moonmind-codex/job:latest /c/auth.json"
    )
    done = playbook("teardown.yml")
    assert done.returncode == 0, done.stdout[-3000:]
    for shard in (0, 1):
        assert not host_a.service(f"moonmind-codex-worker@{shard}").is_enabled
        assert host_a.run(f"docker inspect moonmind-codex-worker-{shard}").rc != 0
    assert host_a.run("docker volume inspect codex_auth_0 codex_auth_1").rc == 0
    done = playbook("site.yml")
    assert done.returncode == 0, done.stdout[-3000:]
    for shard in (0, 1):
        assert host_a.service(f"moonmind-codex-worker@{shard}").is_running
    after = host_a.check_output(
        "docker run --rm --network none --entrypoint sha256sum -v codex_auth_0:/c "
        "moonmind-codex/job:latest /c/auth.json"
    )
    assert after == before  # the login survived teardown and re-provisioning untouched
    assert login_check_table()[0] == f"{HOST_A} ok"


def test_9_move_a_shard_to_another_host_with_its_login(tmp_path: Path) -> None:
    """The operator's move: edit the inventory, run site.yml, carry the login with move-login."""
    host_a, host_b = on(HOST_A), on(HOST_B)
    login_with_api_key(host_a, 1)
    moved = tmp_path / "hosts.yml"
    moved.write_text(
        INVENTORY.read_text()
        .replace("moonmind_codex_shards: [0, 1]", "moonmind_codex_shards: [0]")
        .replace("moonmind_codex_shards: [2]", "moonmind_codex_shards: [1, 2]")
    )
    done = playbook("site.yml", inventory=moved)
    assert done.returncode == 0, done.stdout[-3000:]
    assert not host_a.service("moonmind-codex-worker@1").is_enabled
    assert host_a.run("docker inspect moonmind-codex-worker-1").rc != 0
    assert host_a.run("docker volume inspect codex_auth_1").rc == 0  # kept, not purged
    assert host_b.service("moonmind-codex-worker@1").is_running

    # At -vvv Ansible prints every task's result and module arguments (a registered stdout, a
    # command's stdin), so only no_log keeps the login out of the output.
    done = playbook(
        "move_login.yml", "-vvv", "-e", "shard=1", "-e", f"from_host={HOST_A}", inventory=moved
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert FAKE_KEY not in done.stdout + done.stderr
    tasks = task_sections(done.stdout)
    for carrying in (
        "Read auth.json from the old host's volume",
        "Write it into the new owner's volume (0600, owned by the job uid)",
    ):
        assert "'no_log: true' was specified for this result" in tasks[carrying], tasks[carrying]
        assert '"module_args"' not in tasks[carrying]
    # The control: the step without no_log shows its result and arguments at this verbosity.
    cleared = tasks["Empty the old copy so the login is live on one host only"]
    assert '"module_args"' in cleared and "clear-login" in cleared, cleared
    stat = host_b.check_output(
        "docker run --rm --network none --entrypoint stat -v codex_auth_1:/c "
        "moonmind-codex/job:latest -c '%a %u' /c/auth.json"
    )
    assert stat.strip() == "600 1000"
    gone = host_a.run(
        "docker run --rm --network none --entrypoint test -v codex_auth_1:/c "
        "moonmind-codex/job:latest -e /c/auth.json"
    )
    assert gone.rc == 1  # the old copy is emptied: one live login per shard
    result = enqueue(host_a, "molecule-moved-1", 1)
    assert (result["host"], result["volume"], result["outcome"]) == (
        HOST_B,
        "codex_auth_1",
        "succeeded",
    )
