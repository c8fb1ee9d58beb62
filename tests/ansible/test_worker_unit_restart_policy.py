"""The worker unit stops restarting on a final exit status and keeps restarting on the others.

On a real systemd + Docker host: the unit template and the workers role's systemd tasks as the
playbook installs them, and worker containers made from the real worker image. Shard 0 is a
badly configured worker (an invalid MOONMIND_CODEX_QUEUE_MODE): it must end `failed` with
EX_CONFIG and never be restarted. Shard 1 stands in for a worker whose broker or engine is down:
only its command is overridden (`sh -c 'exit 69'`, EX_UNAVAILABLE) because a real worker cannot
be made to exit 69 cheaply; it serves the restart-policy half of the test only.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.hosts import REPO, ansible_playbook, docker
from moonmind_codex.exitcodes import FINAL_FOR_SYSTEMD, ExitCode

pytestmark = pytest.mark.integration

UNIT_TEMPLATE = (
    REPO / "roles" / "moonmind_codex_workers" / "templates" / "moonmind-codex-worker@.service.j2"
)
WORKER_IMAGE = "moonmind-codex/worker:latest"
PROPERTIES = (
    "ActiveState",
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
    fresh_host: str, tmp_path: Path, host_images: Callable[..., Path]
) -> None:
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
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        json.dumps(
            {
                "all": {
                    "vars": {
                        "ansible_connection": "community.docker.docker",
                        "ansible_become": False,
                        "ansible_python_interpreter": "/usr/bin/python3",
                    },
                    "hosts": {fresh_host: {}},
                }
            }
        )
    )
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
