"""The installed `moonmind-codex` command against the real engine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.conftest import api_key_login
from tests.unit.helpers import chatgpt_auth

CLI = shutil.which("moonmind-codex") or os.path.join(
    os.path.dirname(os.sys.executable), "moonmind-codex"
)


def cli(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env=dict(os.environ, **(env or {})),
        input=stdin,
    )


def volume_env(volume: str) -> dict[str, str]:
    # Shard 0's volume is the test's volume; the rest of the fleet is irrelevant here.
    return {
        "MOONMIND_CODEX_SHARD": "0",
        "MOONMIND_CODEX_AUTH_VOLUME": volume,
        "MOONMIND_CODEX_HOST_NAME": "cli-host",
    }


def engine_state(client: Any) -> tuple[set[str], set[str]]:
    return (
        {v.name for v in client.volumes.list()},
        {c.name for c in client.containers.list(all=True)},
    )


def test_preflight_ok_and_json(client: Any, make_volume: Callable[..., str]) -> None:
    volume = make_volume()
    api_key_login(volume)
    done = cli("preflight", "--shard", "0", "--json", env=volume_env(volume))
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert (data["status"], data["volume"], data["host"]) == ("ok", volume, "cli-host")
    assert "sk-test" not in done.stdout


def test_preflight_blocked_exit_2(client: Any, make_volume: Callable[..., str]) -> None:
    volume = make_volume()
    done = cli("preflight", "--shard", "0", env=volume_env(volume))
    assert done.returncode == 2
    for part in ("BLOCKED", "shard 0", volume, "host cli-host", "moonmind-codex login --shard 0"):
        assert part in done.stdout


def test_login_api_key_stdin_then_ok(client: Any, make_volume: Callable[..., str]) -> None:
    volume = make_volume()
    done = cli(
        "login",
        "--shard",
        "0",
        "--api-key-stdin",
        env=volume_env(volume),
        stdin="sk-test-NOT-A-REAL-KEY-2222\n",
    )
    assert done.returncode == 0, done.stderr
    assert "OK for shard 0" in done.stdout and "2222" not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("args", "env", "code", "message"),
    [
        (["preflight", "--shard", "9"], {}, 64, "shard 9 is out of range"),
        (["preflight", "--shard", "x"], {}, 2, "shard must be a whole number"),
        (["login", "--shard", "5", "--api-key-stdin"], {}, 64, "shard 5 is out of range"),
        (["route", "k", "--shards", "0"], {}, 2, "must be at least 1"),
        (["route", "k"], {"MOONMIND_CODEX_SHARD_COUNT": "-2"}, 64, "must be >= 1"),
        (["preflight", "--shard", "0"], {"MOONMIND_CODEX_QUEUE_MODE": "fanout"}, 64, "QUEUE_MODE"),
        (["bogus"], {}, 2, "invalid choice"),
    ],
)
def test_bad_input_changes_nothing(
    client: Any, args: list[str], env: dict[str, str], code: int, message: str
) -> None:
    before = engine_state(client)
    done = cli(*args, env=env, stdin="sk-should-never-be-used")
    assert done.returncode == code, (done.stdout, done.stderr)
    assert message in done.stderr
    assert engine_state(client) == before


def test_login_from_stdin_validates_then_writes(
    client: Any, make_volume: Callable[..., str]
) -> None:
    volume = make_volume()
    bad = cli("login", "--shard", "0", "--from-file", "-", env=volume_env(volume), stdin="{}")
    assert bad.returncode == 1 and "standard input is not a usable Codex login" in bad.stderr
    good = cli(
        "login",
        "--shard",
        "0",
        "--from-file",
        "-",
        env=volume_env(volume),
        stdin=json.dumps(chatgpt_auth()),
    )
    assert good.returncode == 0, good.stderr
    assert "OK for shard 0" in good.stdout
    assert "SECRET" not in good.stdout + good.stderr
