"""Non-default fleet settings reach the workers and the login-check table alike.

One real systemd + Docker host converged by playbooks/site.yml with a warn threshold of 3 days,
job uid/gid 1001, the queue prefix `cx` and the Codex side on core 1 (the broker on core 0).
Both the worker (a phase sent through the broker) and the login-check table must judge a login
refreshed 5 days ago `warn` (the default threshold, 7, says `ok`), neither may block it for its
owner (uid 1001, the default expects 1000), and every queue, label and route must use `cx`.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.hosts import REPO, ansible_playbook, docker, fleet_inventory, write_inventory
from moonmind_codex.core.routing import shard_for_key
from tests.unit.helpers import chatgpt_auth

pytestmark = pytest.mark.integration

SHARDS = 2
JOB_UID = 1001
PREFIX = "cx"
WORKER_PYTHON = "/opt/moonmind-codex/bin/python"
CONFIG_DIR = "/etc/moonmind-codex"
# A worker container reads its own shard's broker URL, whose user publishes to no other shard.
PRODUCER_URL = f"MOONMIND_CODEX_BROKER_URL_FILE={CONFIG_DIR}/broker_url"


def changed(output: str, host: str) -> int:
    return sum(int(n) for n in re.findall(rf"{host}\s+:.*?changed=(\d+)", output))


def cli_on(host: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`moonmind-codex ARGS` in the worker image on ``host`` with the host's fleet.env."""
    gid = docker("exec", host, "stat", "-c", "%g", "/var/run/docker.sock").stdout.strip()
    return subprocess.run(
        [
            "docker", "exec", "-i", host, "docker", "run", "--rm", "-i", "--network=none",
            f"--group-add={gid}", "--volume=/var/run/docker.sock:/var/run/docker.sock",
            f"--volume={CONFIG_DIR}:{CONFIG_DIR}:ro", f"--env-file={CONFIG_DIR}/fleet.env",
            "moonmind-codex/worker:latest", *args,
        ],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )  # fmt: skip


def test_warn_threshold_job_uid_and_queue_prefix_reach_workers_and_login_check(
    fresh_host_with_images: str, tmp_path: Path, host_images: Callable[..., Path]
) -> None:
    fresh_host = fresh_host_with_images
    archives = host_images(fresh_host, tmp_path / "archives", "worker", "job", "broker")
    inventory = write_inventory(
        tmp_path / "hosts.yml",
        fleet_inventory(
            fresh_host,
            [0, 1],
            SHARDS,
            moonmind_codex_images_source="load",
            moonmind_codex_images_archive_dir=str(archives),
            moonmind_codex_broker_password="not-a-secret",
            moonmind_codex_last_refresh_warn_days=3,
            moonmind_codex_job_uid=JOB_UID,
            moonmind_codex_job_gid=JOB_UID,
            moonmind_codex_queue_prefix=PREFIX,
            moonmind_codex_workers_allowed_commands=["codex", "id"],
            moonmind_codex_codex_cpuset="1",
            moonmind_codex_broker_cpuset="0",
        ),
    )
    site = REPO / "playbooks" / "site.yml"
    done = ansible_playbook(inventory, site)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    again = ansible_playbook(inventory, site)
    assert again.returncode == 0, again.stdout[-4000:]
    # env_file compared on the host: no drift.
    assert changed(again.stdout, fresh_host) == 0, re.findall(
        r"TASK \[([^\]]*)\][^\n]*\n(?:[^\n]+\n)*?changed", again.stdout
    )

    # The core split: the engine (and so the container churn it starts), the shard workers and
    # their jobs on core 1, the broker on core 0; the running engine was pinned without a restart.
    for unit in ("docker", "containerd"):
        shown = docker("exec", fresh_host, "systemctl", "show", "-p", "CPUAffinity", unit).stdout
        assert shown.strip() == "CPUAffinity=1", (unit, shown)
    pinned = docker(
        "exec", fresh_host, "sh", "-c",
        "for p in $(pgrep -x dockerd) $(pgrep -x containerd); do taskset -pc $p; done",
    ).stdout.splitlines()  # fmt: skip
    assert len(pinned) >= 2 and all(line.endswith("affinity list: 1") for line in pinned), pinned
    cpusets = docker(
        "exec", fresh_host, "docker", "inspect", "--format", "{{.HostConfig.CpusetCpus}}",
        "moonmind-codex-worker-0", "moonmind-codex-worker-1", "moonmind-codex-broker",
    ).stdout.split()  # fmt: skip
    assert cpusets == ["1", "1", "0"], cpusets
    # The broker's port proxy (the engine's child) was moved to the broker's core by its unit.
    proxies = docker(
        "exec", fresh_host, "sh", "-c",
        'for p in $(pgrep -f "[d]ocker-proxy .*-host-port 567[12] "); do taskset -pc $p; done',
    ).stdout.splitlines()  # fmt: skip
    assert proxies and all(line.endswith("affinity list: 0") for line in proxies), proxies
    fleet_env = docker("exec", fresh_host, "cat", f"{CONFIG_DIR}/fleet.env").stdout
    assert "MOONMIND_CODEX_JOB_CPUSET=1\n" in fleet_env

    # Shard 0 signed in through the CLI and fleet.env: a login refreshed 5 days ago.
    login = cli_on(
        fresh_host, "login", "--shard", "0", "--from-file", "-",
        stdin=json.dumps(chatgpt_auth(last_refresh_days=5)),
    )  # fmt: skip
    assert login.returncode == 0, login.stdout + login.stderr
    owner = docker(
        "exec", fresh_host, "docker", "run", "--rm", "--network=none", "--user=0:0",
        "--entrypoint=stat", "--volume=codex_auth_0:/c:ro", "moonmind-codex/job:latest",
        "-c", "%u:%g %a", "/c", "/c/auth.json",
    ).stdout.split("\n")  # fmt: skip
    assert owner[:2] == [f"{JOB_UID}:{JOB_UID} 700", f"{JOB_UID}:{JOB_UID} 600"]

    table = ansible_playbook(inventory, REPO / "playbooks" / "login_check.yml")
    assert table.returncode == 0, table.stdout[-3000:]
    rows = re.findall(r"(\d+)\s+(codex_auth_\d+)\s+(\S+)\s+(ok|warn|blocked)\b", table.stdout)
    assert rows == [
        ("0", "codex_auth_0", fresh_host, "warn"),
        ("1", "codex_auth_1", fresh_host, "blocked"),
    ], table.stdout[-3000:]

    # The worker judges it the same, on queue cx-0, and runs the job as uid 1001.
    key = next(k for k in (f"settings/repo-{i}" for i in range(100)) if shard_for_key(k, 2) == 0)
    # Sent as the host's producer (the CLI's broker URL), from the worker image of shard 1.
    sent = docker(
        "exec", fresh_host, "docker", "exec", f"--env={PRODUCER_URL}",
        "moonmind-codex-worker-1", "moonmind-codex", "enqueue",
        "--run-id", "settings-1", "--phase", "specify", "--repository", key,
        "--timeout", "120", "--wait", "--", "id", "-u",
    )  # fmt: skip
    result = json.loads(sent.stdout)
    assert (result["queue"], result["shard"], result["host"]) == (f"{PREFIX}-0", 0, fresh_host)
    assert (result["outcome"], result["preflight_status"]) == ("succeeded", "warn")
    log = docker("exec", fresh_host, "cat", result["log_path"]).stdout
    assert log.splitlines()[0] == str(JOB_UID)

    # The server rejects shard 0's login (recorded in the run store, as a failed phase would):
    # the login check reports it blocked, as the shard's next phase would find it.
    digest = docker(
        "exec", fresh_host, "docker", "run", "--rm", "--network=none", "--user=0:0",
        "--entrypoint=sha256sum", "--volume=codex_auth_0:/c:ro", "moonmind-codex/job:latest",
        "/c/auth.json",
    ).stdout.split()[0]  # fmt: skip
    quarantined = docker(
        "exec", fresh_host, "docker", "exec", "moonmind-codex-worker-0", WORKER_PYTHON, "-c",
        "import sys; from moonmind_codex.store.runstore import RunStore;"
        "from moonmind_codex.settings import load_settings; s = load_settings();"
        "RunStore.open(s.database_url).quarantine(s.served_shard.volume, host=s.host_name,"
        " shard=0, reason='refresh_token_reused', auth_digest=sys.argv[1])",
        digest,
    )  # fmt: skip
    assert quarantined.returncode == 0, quarantined.stderr
    rejected = ansible_playbook(inventory, REPO / "playbooks" / "login_check.yml")
    assert rejected.returncode == 0, rejected.stdout[-3000:]
    assert re.search(
        rf"0\s+codex_auth_0\s+{fresh_host}\s+blocked\b.*the server rejected this login "
        r"\(refresh_token_reused",
        rejected.stdout,
    ), rejected.stdout[-3000:]

    labels = docker(
        "exec", fresh_host, "docker", "ps", "--filter", "label=io.moonmind.codex.role=worker",
        "--format", '{{.Label "io.moonmind.codex.queue"}}',
    ).stdout.split()  # fmt: skip
    assert sorted(labels) == [f"{PREFIX}-0", f"{PREFIX}-1"]
    queues = docker(
        "exec", fresh_host, "docker", "exec", "moonmind-codex-broker",
        "rabbitmqctl", "-q", "list_queues", "name", "consumers",
    ).stdout  # fmt: skip
    consumers = dict(
        line.split() for line in queues.splitlines() if "pidbox" not in line and line.strip()
    )
    assert {q: n for q, n in consumers.items() if q.startswith(PREFIX)} == {
        f"{PREFIX}-0": "1",
        f"{PREFIX}-1": "1",
    }
    assert not any(q.startswith("codex") for q in consumers), consumers
