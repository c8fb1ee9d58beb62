"""The worker unit stops restarting on a final exit status and keeps restarting on the others.

On a real systemd + Docker host: the unit template and the workers role's systemd tasks as the
playbook installs them, and worker containers made from the real worker image. Shard 0 is a
badly configured worker (an invalid MOONMIND_CODEX_QUEUE_MODE): it must end `failed` with
EX_CONFIG and never be restarted. Shard 1 stands in for a worker whose broker or engine is down:
only its command is overridden (`sh -c 'exit 69'`, EX_UNAVAILABLE); it serves the restart-policy
half of that test only.

Workers that never go quiet: on one more host, converged once for the module by
playbooks/site.yml (broker, two real shard workers under their units), a real worker told to stop
consuming by a remote `celery control shutdown` through the fleet's broker (anyone with broker
access can send one) exits 69 and systemd brings it back: NRestarts grows, the journal records
status 69, and the shard consumes its queue again (one consumer in RabbitMQ, a ping task answered
through codex-N). An operator's `systemctl stop` leaves the unit inactive, exit 0, no restart.
After the broker's unit is stopped and started again, every shard consumes its queue again
(Celery reconnects by itself, or exits 69 and is restarted).

Celery giving up on an unreachable broker is not provoked here: with the settings the worker
keeps (broker_connection_max_retries 100, waits growing by 2 s up to 30 s) it retries for about
45 minutes first. It then logs "Unrecoverable error" and its worker loop ends with Celery's exit
status 1, which run_worker turns into 69 like any ending without an operator's signal.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.hosts import (
    REPO,
    ansible_playbook,
    docker,
    fleet_inventory,
    hosts_inventory,
    queue_consumers,
    remove_host,
    start_host,
    wait_for_consumers,
    write_inventory,
)
from moonmind_codex.core.exitcodes import FINAL_FOR_SYSTEMD, ExitCode
from tests.ansible.conftest import copy_images

pytestmark = pytest.mark.integration

UNIT_TEMPLATE = (
    REPO / "roles" / "moonmind_codex_workers" / "templates" / "moonmind-codex-worker@.service.j2"
)
WORKER_IMAGE = "moonmind-codex/worker:latest"
PROPERTIES = (
    "ActiveState",
    "SubState",
    "Result",
    "ExecMainStatus",
    "NRestarts",
    "RestartUSec",
    "ExecMainStartTimestampMonotonic",
    "ExecMainExitTimestampMonotonic",
)


def unit(host: str, shard: int) -> dict[str, str]:
    out = docker(
        "exec",
        host,
        "systemctl",
        "show",
        f"--property={','.join(PROPERTIES)}",
        f"moonmind-codex-worker@{shard}.service",
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def wait_for_unit(host: str, shard: int, condition, what: str, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        state = unit(host, shard)
        if condition(state):
            return state
        assert time.monotonic() < deadline, f"unit of shard {shard} never {what}: {state}"
        time.sleep(0.5)


def microseconds(timespan: str) -> int:
    """systemd's timespan text ("10s", "1min 30s", "100ms") in microseconds."""
    scale = {"min": 60_000_000, "s": 1_000_000, "ms": 1_000, "us": 1}
    parts = re.findall(r"(\d+)(min|ms|us|s)", timespan)
    assert parts, timespan
    return sum(int(n) * scale[u] for n, u in parts)


def test_unit_template_stops_restarting_on_exactly_the_final_exit_codes() -> None:
    lines = re.findall(r"^RestartPreventExitStatus=(.*)$", UNIT_TEMPLATE.read_text(), re.M)
    assert len(lines) == 1
    assert sorted(int(code) for code in lines[0].split()) == sorted(FINAL_FOR_SYSTEMD)
    assert ExitCode.CONFIG in FINAL_FOR_SYSTEMD
    assert ExitCode.UNAVAILABLE not in FINAL_FOR_SYSTEMD


def test_bad_settings_end_the_unit_failed_while_engine_down_is_restarted(
    fresh_host_with_images: str, tmp_path: Path, host_images: Callable[..., Path]
) -> None:
    fresh_host = fresh_host_with_images
    host_images(fresh_host, tmp_path / "archives", "worker")
    docker(
        "exec", fresh_host, "docker", "create", "--name", "moonmind-codex-worker-0",
        "--env", "MOONMIND_CODEX_SHARD=0", "--env", "MOONMIND_CODEX_QUEUE_MODE=bogus",
        WORKER_IMAGE, "worker",
    )  # fmt: skip
    docker(
        "exec", fresh_host, "docker", "create", "--name", "moonmind-codex-worker-1",
        "--entrypoint", "sh", WORKER_IMAGE, "-c", "exit 69",
    )  # fmt: skip
    inventory = write_inventory(tmp_path / "hosts.yml", hosts_inventory([fresh_host]))
    playbook = tmp_path / "units.yml"
    playbook.write_text(
        json.dumps(
            [
                {
                    "name": "The workers role's units, enabled and started",
                    "hosts": "all",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "name": "Units of shards 0 and 1",
                            "ansible.builtin.include_role": {
                                "name": "moonmind_codex_workers",
                                "tasks_from": "systemd.yml",
                            },
                            "vars": {"moonmind_codex_workers_shards": [0, 1]},
                        }
                    ],
                }
            ]
        )
    )
    done = ansible_playbook(inventory, playbook)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]

    bad = wait_for_unit(fresh_host, 0, lambda s: s["ActiveState"] == "failed", "failed")
    assert bad["Result"] == "exit-code"
    assert int(bad["ExecMainStatus"]) == ExitCode.CONFIG
    exited = docker(
        "exec", fresh_host, "docker", "inspect", "--format", "{{.State.ExitCode}}",
        "moonmind-codex-worker-0",
    ).stdout.strip()  # fmt: skip
    assert int(exited) == ExitCode.CONFIG

    # Shard 1 restarted twice (and is waiting for its next restart): more than one RestartSec
    # has passed since shard 0 stopped too.
    down = wait_for_unit(
        fresh_host,
        1,
        lambda s: int(s["NRestarts"] or 0) >= 2 and s["ActiveState"] == "activating",
        "restarted twice",
    )
    assert int(down["ExecMainStatus"]) == ExitCode.UNAVAILABLE
    bad = unit(fresh_host, 0)
    waited_us = int(down["ExecMainStartTimestampMonotonic"]) - int(
        bad["ExecMainExitTimestampMonotonic"]
    )
    assert waited_us > microseconds(bad["RestartUSec"]) > 0
    assert (bad["ActiveState"], bad["NRestarts"]) == ("failed", "0")


# Workers that never go quiet: one host converged by site.yml for the tests below.
FLEET_SHARDS = [0, 1]
CONFIG_DIR = "/etc/moonmind-codex"
EXITED_69 = "Main process exited, code=exited, status=69/UNAVAILABLE"


@pytest.fixture(scope="module")
def fleet_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A host converged by playbooks/site.yml: the broker and two shard workers under systemd."""
    name = f"mmc-test-quiet-{secrets.token_hex(3)}"
    tmp = tmp_path_factory.mktemp("fleet")
    try:
        start_host(name, images=("worker", "job", "broker"))
        archives = copy_images(name, tmp / "archives", "worker", "job", "broker")
        inventory = write_inventory(
            tmp / "hosts.yml",
            fleet_inventory(
                name,
                FLEET_SHARDS,
                len(FLEET_SHARDS),
                moonmind_codex_images_source="load",
                moonmind_codex_images_archive_dir=str(archives),
                # The password mode (one shared user, plain AMQP, unsigned messages): these
                # tests are about the unit, and send a remote shutdown and pings with Celery's
                # own client.
                moonmind_codex_broker_security="password",
                moonmind_codex_broker_password="not-a-secret",
                # Off by default; on here, so that a remote shutdown (the quiet stop the unit
                # must catch) reaches the worker.
                moonmind_codex_workers_remote_control=True,
            ),
        )
        done = ansible_playbook(inventory, REPO / "playbooks" / "site.yml")
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
        for shard in FLEET_SHARDS:
            wait_until_consuming(name, shard)
        yield name
    finally:
        remove_host(name)


def in_worker_image(host: str, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``sh -c SCRIPT sh ARGS`` in a throw-away container of the worker image on ``host``.

    Host networking and the host's configuration directory, as the worker containers have:
    the script reads the broker URL from the secret file the playbook wrote (readable by the
    image's uid only), so it never appears on a command line.
    """
    return docker(
        "exec", host, "docker", "run", "--rm", "--network=host",
        f"--volume={CONFIG_DIR}:{CONFIG_DIR}:ro", "--entrypoint=sh", WORKER_IMAGE,
        "-c", f'export CELERY_BROKER_URL="$(cat {CONFIG_DIR}/broker_url)"; {script}', "sh", *args,
        check=False,
    )  # fmt: skip


def wait_until_consuming(host: str, shard: int, timeout_s: float = 180) -> None:
    wait_for_consumers(host, [shard], timeout_s)


def ping_through_queue(host: str, shard: int) -> dict[str, str]:
    """A ping task sent through codex-SHARD by a producer of the fleet's broker, and its reply."""
    done = in_worker_image(
        host,
        'exec /opt/moonmind-codex/bin/python -c "$1" "$2"',
        "import json, os, sys\n"
        "from celery import Celery\n"
        "app = Celery(broker=os.environ['CELERY_BROKER_URL'], backend='rpc://')\n"
        "sent = app.send_task('moonmind_codex.ping', args=['back'], queue=sys.argv[1])\n"
        "print(json.dumps(sent.get(timeout=120)))\n",
        f"codex-{shard}",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def journal(host: str, shard: int) -> str:
    return docker(
        "exec", host, "journalctl", "--no-pager", "-o", "cat",
        "--unit", f"moonmind-codex-worker@{shard}.service",
    ).stdout  # fmt: skip


def test_a_remote_shutdown_through_the_broker_exits_69_and_systemd_brings_the_shard_back(
    fleet_host: str,
) -> None:
    shard = 0
    before = wait_for_unit(
        fleet_host, shard, lambda s: s["ActiveState"] == "active", "active", timeout_s=60
    )
    exits_before = journal(fleet_host, shard).count(EXITED_69)

    # What anyone with the broker's credentials could do where remote control is on, with
    # Celery's own CLI: the worker stops consuming. A shutdown has no reply, so the CLI may say
    # that no node replied (its exit 69).
    node = f"codex-{shard}@{fleet_host}"
    sent = in_worker_image(
        fleet_host,
        'exec /opt/moonmind-codex/bin/celery control shutdown --destination "$1"',
        node,
    )
    assert sent.returncode == 0 or "No nodes replied" in sent.stdout + sent.stderr, (
        sent.stdout + sent.stderr
    )

    after = wait_for_unit(
        fleet_host,
        shard,
        lambda s: (
            int(s["NRestarts"]) == int(before["NRestarts"]) + 1
            and (s["ActiveState"], s["SubState"]) == ("active", "running")
        ),
        "restarted once and active again",
        timeout_s=180,
    )
    assert int(after["ExecMainStartTimestampMonotonic"]) > int(
        before["ExecMainStartTimestampMonotonic"]
    )
    # systemd's record of the ending: the main process (docker start -a) exited 69, once.
    log = journal(fleet_host, shard)
    assert log.count(EXITED_69) == exits_before + 1, log[-3000:]
    assert "restart counter is at" in log, log[-3000:]
    assert "stopped consuming without an operator's stop" in log, log[-3000:]

    wait_until_consuming(fleet_host, shard)
    assert ping_through_queue(fleet_host, shard) == {
        "value": "back",
        "worker": node,
        "queue": f"codex-{shard}",
    }
    # The other shard was not touched.
    assert unit(fleet_host, 1)["NRestarts"] == "0"


def test_an_operators_systemctl_stop_leaves_the_unit_inactive_without_a_restart(
    fleet_host: str,
) -> None:
    shard = 1
    before = wait_for_unit(
        fleet_host, shard, lambda s: s["ActiveState"] == "active", "active", timeout_s=60
    )
    wait_until_consuming(fleet_host, shard)
    docker("exec", fleet_host, "systemctl", "stop", f"moonmind-codex-worker@{shard}.service")
    # systemctl stop returns once the unit stopped: a restart would already be scheduled
    # (activating/auto-restart), so inactive/dead here means none will come.
    stopped = unit(fleet_host, shard)
    assert (stopped["ActiveState"], stopped["SubState"], stopped["Result"]) == (
        "inactive",
        "dead",
        "success",
    ), stopped
    assert stopped["NRestarts"] == before["NRestarts"]
    exited = docker(
        "exec", fleet_host, "docker", "inspect",
        "--format", "{{.State.Running}} {{.State.ExitCode}}", f"moonmind-codex-worker-{shard}",
    ).stdout.split()  # fmt: skip
    assert exited == ["false", str(int(ExitCode.OK))]
    assert EXITED_69 not in journal(fleet_host, shard)
    assert queue_consumers(fleet_host).get(f"codex-{shard}") == 0

    # Started again by the operator: it consumes again.
    docker("exec", fleet_host, "systemctl", "start", f"moonmind-codex-worker@{shard}.service")
    wait_until_consuming(fleet_host, shard)
    assert unit(fleet_host, shard)["NRestarts"] == before["NRestarts"]


def test_after_a_broker_outage_every_shard_consumes_its_queue_again(fleet_host: str) -> None:
    lost = "Connection to broker lost"
    ready = "moonmind-codex-broker: ready"
    broker_log = ("exec", fleet_host, "journalctl", "--no-pager", "-o", "cat", "--unit")
    ready_before = docker(*broker_log, "moonmind-codex-broker.service").stdout.count(ready)
    for shard in FLEET_SHARDS:
        wait_until_consuming(fleet_host, shard)
    before = {
        shard: (unit(fleet_host, shard)["NRestarts"], journal(fleet_host, shard))
        for shard in FLEET_SHARDS
    }
    docker("exec", fleet_host, "systemctl", "stop", "moonmind-codex-broker.service")
    try:
        deadline = time.monotonic() + 120
        while not all(
            journal(fleet_host, s).count(lost) > before[s][1].count(lost) for s in FLEET_SHARDS
        ):
            assert time.monotonic() < deadline, "a worker never noticed that the broker went away"
            time.sleep(1)
    finally:
        docker("exec", fleet_host, "systemctl", "start", "moonmind-codex-broker.service")
    # The broker's entry point re-creates its user on every start (connections made before that
    # are closed, and refused until it is done): wait for it to say that it is ready.
    deadline = time.monotonic() + 300
    while docker(*broker_log, "moonmind-codex-broker.service").stdout.count(ready) <= ready_before:
        assert time.monotonic() < deadline, "the broker never said it was ready again"
        time.sleep(1)
    for shard in FLEET_SHARDS:
        wait_until_consuming(fleet_host, shard, timeout_s=300)
        assert ping_through_queue(fleet_host, shard)["worker"] == f"codex-{shard}@{fleet_host}"
        # Celery reconnected by itself, or its worker gave up (on a refused login during the
        # broker's user re-creation) and exited 69: then systemd restarted it, once per exit.
        state = unit(fleet_host, shard)
        assert state["ActiveState"] == "active", state
        restarts = int(state["NRestarts"]) - int(before[shard][0])
        exits = journal(fleet_host, shard).count(EXITED_69) - before[shard][1].count(EXITED_69)
        assert restarts == exits >= 0, (state, journal(fleet_host, shard)[-3000:])
