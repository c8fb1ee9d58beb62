"""Bad inventories fail in the validation play, before any host is touched.

These run the real `ansible-playbook playbooks/site.yml`. The hosts in the inventories do not
exist: a run that got past validation would fail on them as unreachable, so "failed in
validation, no host contacted" is checked from the recap.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.hosts import REPO, ansible_playbook

sys.path.insert(0, str(REPO / "plugins" / "filter"))
from moonmind_codex_inventory import inventory_errors

PLAYBOOK_BIN = Path(sys.executable).parent / "ansible-playbook"

GOOD = """
all:
  vars:
    moonmind_codex_shard_count: 3
    moonmind_codex_broker_password: not-a-real-password
  children:
    codex_workers:
      hosts:
        host-a.invalid: {shards_a}
        host-b.invalid: {shards_b}
    codex_broker:
      hosts:
{brokers}
"""


def inventory(
    tmp_path: Path,
    shards_a: str = "[0, 1]",
    shards_b: str = "[2]",
    brokers: str = "        broker.invalid:",
    extra: str = "",
) -> Path:
    text = GOOD.format(
        shards_a=f"{{moonmind_codex_shards: {shards_a}}}",
        shards_b=f"{{moonmind_codex_shards: {shards_b}}}",
        brokers=brokers or "        {}",
    )
    if not brokers:
        text = text.replace("    codex_broker:\n      hosts:\n        {}\n", "")
    path = tmp_path / "hosts.yml"
    path.write_text(text + extra)
    return path


def run_site(inv: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return ansible_playbook(inv, REPO / "playbooks" / "site.yml", *extra, timeout_s=300)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shards_b": "[1, 2]"}, "shard 1 is assigned to 2 hosts (host-a.invalid, host-b.invalid)"),
        ({"shards_b": "[]"}, "shard 2 is assigned to no host (gap): add 2 to one host's"),
        ({"shards_b": "[2, 7]"}, "host host-b.invalid: shard 7 is out of range"),
        ({"shards_b": "['2']"}, "host host-b.invalid: shard '2' is not an integer"),
        ({"shards_b": "[true]"}, "host host-b.invalid: shard True is not an integer"),
        ({"shards_b": "2"}, "host host-b.invalid: moonmind_codex_shards is 2, not a list"),
        ({"brokers": ""}, "no broker defined: put one host in group codex_broker"),
        (
            {"brokers": "        broker.invalid:\n        broker2.invalid:"},
            "group codex_broker has 2 hosts",
        ),
        (
            {
                "extra": "    codex_database:\n      hosts:\n        db.invalid:\n"
                "        db2.invalid:\n"
            },
            "group codex_database has 2 hosts (db.invalid, db2.invalid)",
        ),
    ],
    ids=[
        "duplicate",
        "gap",
        "out-of-range",
        "string-id",
        "bool-id",
        "not-a-list",
        "no-broker",
        "two-brokers",
        "two-databases",
    ],
)
def test_bad_inventory_fails_before_any_host_changes(
    tmp_path: Path, kwargs: dict[str, str], message: str
) -> None:
    done = run_site(inventory(tmp_path, **kwargs))
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "The inventory is not valid; nothing was changed" in output
    assert message in output, output[-3000:]
    # Only the validation play ran: no worker or broker host was contacted.
    for host in ("host-a.invalid", "host-b.invalid", "broker.invalid", "db.invalid"):
        assert f"{host} " not in output.split("PLAY RECAP")[-1]
    assert "UNREACHABLE" not in output


def test_bad_shard_count(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    inv.write_text(
        inv.read_text().replace(
            "moonmind_codex_shard_count: 3", "moonmind_codex_shard_count: three"
        )
    )
    done = run_site(inv)
    assert done.returncode != 0
    assert "moonmind_codex_shard_count must be a positive integer, got 'three'" in done.stdout


def test_good_inventory_passes_validation_then_reaches_hosts(tmp_path: Path) -> None:
    # Proof that the checks above are not vacuous: a valid inventory passes the validation task
    # itself and only then fails, on the first task of the next play (the hosts do not exist).
    done = ansible_playbook(
        inventory(tmp_path),
        REPO / "playbooks" / "site.yml",
        timeout_s=300,
        extra_env={"ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"},
    )
    assert done.returncode != 0
    report = json.loads(done.stdout)
    plays = [(p["play"]["name"], p["tasks"]) for p in report["plays"]]
    # The next play makes the fleet's credentials, first reading the broker host's address.
    assert [name for name, _ in plays] == [
        "Validate the Codex fleet inventory",
        "Fleet credentials",
    ]
    (validation,) = plays[0][1]
    assert validation["task"]["name"] == "Check shard assignments and broker definition"
    verdict = validation["hosts"]["localhost"]
    assert verdict["action"] == "ansible.builtin.assert" and not verdict.get("failed"), verdict
    assert verdict.get("msg") == "2 worker hosts, every shard on exactly one host", verdict
    first_host_task = plays[1][1][0]["hosts"]
    assert list(first_host_task) == ["broker.invalid"]
    assert first_host_task["broker.invalid"].get("unreachable") is True
    assert report["stats"]["localhost"]["failures"] == 0


def test_check_mode_also_validates(tmp_path: Path) -> None:
    done = run_site(inventory(tmp_path, shards_b="[1, 2]"), "--check", "--diff")
    assert done.returncode != 0 and "shard 1 is assigned to 2 hosts" in done.stdout


def test_filter_reports_every_problem_at_once() -> None:
    hostvars = {"a": {"moonmind_codex_shards": [0, 0, 5, "x"]}, "b": {}}
    errors = inventory_errors(["a", "b"], hostvars, [], 3, "")
    text = "\n".join(errors)
    for part in (
        "host b: moonmind_codex_shards is not set",
        "shard 5 is out of range",
        "shard 'x' is not an integer",
        "shard 0 is assigned to 2 hosts (a, a)",
        "shard 1 is assigned to no host",
        "shard 2 is assigned to no host",
        "no broker defined",
    ):
        assert part in text


def test_filter_accepts_a_valid_fleet_and_external_broker() -> None:
    hostvars = {"a": {"moonmind_codex_shards": [0, 2]}, "b": {"moonmind_codex_shards": [1]}}
    external = "amqp://u:p@mq:5672//"
    assert inventory_errors(["a", "b"], hostvars, [], 3, external, "password") == []
    assert "both moonmind_codex_broker_url and a codex_broker host" in "".join(
        inventory_errors(["a", "b"], hostvars, ["mq"], 3, "amqp://x", "password")
    )


def test_filter_refuses_an_unknown_trust_mode_or_tls_with_an_external_broker() -> None:
    hostvars = {"a": {"moonmind_codex_shards": [0]}}
    assert inventory_errors(["a"], hostvars, ["mq"], 1, "", "tls") == []
    (unknown,) = inventory_errors(["a"], hostvars, ["mq"], 1, "", "TLS")
    assert unknown == ("moonmind_codex_broker_security is 'TLS': set it to tls or password")
    (external,) = inventory_errors(["a"], hostvars, [], 1, "amqp://u:p@mq:5672//", "tls")
    assert "does not manage" in external
    assert "set moonmind_codex_broker_security: password" in external


def test_filter_allows_one_run_store_and_names_each_conflict() -> None:
    hostvars = {"a": {"moonmind_codex_shards": [0]}}
    external = "postgresql+psycopg://moonmind:pw@db.internal/moonmind"
    assert inventory_errors(["a"], hostvars, ["mq"], 1, "", "tls", ["db"], "") == []
    assert inventory_errors(["a"], hostvars, ["mq"], 1, "", "tls", [], external) == []
    assert inventory_errors(["a"], hostvars, ["mq"], 1, "", "password", [], None) == []
    (both,) = inventory_errors(["a"], hostvars, ["mq"], 1, "", "tls", ["db"], external)
    assert "both moonmind_codex_database_url and a codex_database host" in both
    (scheme,) = inventory_errors(["a"], hostvars, ["mq"], 1, "", "tls", [], "mysql://db/x")
    assert "moonmind_codex_database_url must start with postgresql+psycopg://" in scheme
    (kind,) = inventory_errors(["a"], hostvars, ["mq"], 1, "", "tls", [], {"url": "x"})
    assert "moonmind_codex_database_url is a dict, not a string" in kind
    (mode,) = inventory_errors(["a"], hostvars, ["mq"], 1, "", "password", ["db"], "")
    assert "made in the tls mode only: set moonmind_codex_broker_security: tls" in mode


def test_filter_checks_the_core_lists_of_every_host() -> None:
    hostvars: dict[str, dict[str, Any]] = {
        "a": {"moonmind_codex_shards": [0], "moonmind_codex_codex_cpuset": "1-3,5"},
        "mq": {"moonmind_codex_broker_cpuset": "0"},
    }
    assert inventory_errors(["a"], hostvars, ["mq"], 1, "", "tls") == []
    hostvars["a"]["moonmind_codex_codex_cpuset"] = 1
    hostvars["mq"]["moonmind_codex_broker_cpuset"] = "0-"
    assert inventory_errors(["a"], hostvars, ["mq"], 1, "", "tls") == [
        'host a: moonmind_codex_codex_cpuset is 1, not a core list: use the cpuset syntax ("1", '
        '"2-7", "1,3"), or "" for any core',
        "host mq: moonmind_codex_broker_cpuset is '0-', not a core list: use the cpuset syntax "
        '("1", "2-7", "1,3"), or "" for any core',
    ]


def test_example_and_local_inventories_are_valid() -> None:
    for inv in ("inventory/local", "inventory/example"):
        done = ansible_playbook(
            REPO / inv,
            REPO / "playbooks" / "validate.yml",
            "-e",
            "vault_moonmind_codex_broker_password=x",
            timeout_s=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_syntax_of_every_playbook() -> None:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    for playbook in sorted((REPO / "playbooks").glob("*.yml")):
        done = subprocess.run(
            [str(PLAYBOOK_BIN), "--syntax-check", str(playbook)],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, (playbook, done.stderr)
