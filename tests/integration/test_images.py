"""The images themselves: job user and mounts, real CLIs, broker users, lock wrapper."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kombu
import pytest
from amqp.exceptions import AccessRefused

from harness.broker import BROKER_IMAGE, broker_container, running_broker
from harness.logins import JOB_IMAGE
from tests.integration.conftest import unique


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "run", "--rm", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        input=stdin.decode() if stdin else None,
    )


def wait_for_output(container: str, text: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        logs = subprocess.run(
            ["docker", "logs", container], capture_output=True, text=True, check=False
        )
        if text in logs.stdout:
            return
        assert time.monotonic() < deadline, f"{container} never printed {text!r}: {logs}"
        time.sleep(0.1)


def test_job_image_user_home_and_tools(client: Any) -> None:
    done = run(
        JOB_IMAGE,
        "sh",
        "-c",
        "id; echo HOME=$HOME; stat -c '%n %u:%g %a' /home/app/.codex /work;"
        "codex --version; specify --help >/dev/null && echo specify-ok; git --version",
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "uid=1000(app) gid=1000(app)" in out and "HOME=/home/app" in out
    assert "/home/app/.codex 1000:1000 700" in out and "/work 1000:1000 755" in out
    assert "codex-cli" in out and "specify-ok" in out and "git version" in out


def test_fresh_volume_takes_job_ownership(client: Any, make_volume: Callable[..., str]) -> None:
    volume = make_volume()
    done = run(
        "-v", f"{volume}:/home/app/.codex", JOB_IMAGE, "stat", "-c", "%u:%g %a", "/home/app/.codex"
    )
    assert done.stdout.strip() == "1000:1000 700"


def test_no_credentials_in_image_layers(client: Any) -> None:
    done = run("--entrypoint", "sh", JOB_IMAGE, "-c", "ls -A /home/app/.codex | wc -l")
    assert done.stdout.strip() == "0"
    history = subprocess.run(
        ["docker", "history", "--no-trunc", JOB_IMAGE], capture_output=True, text=True, check=True
    ).stdout
    assert "OPENAI_API_KEY" not in history and "auth.json" not in history


def test_lock_wrapper_refuses_a_second_job(client: Any, make_volume: Callable[..., str]) -> None:
    volume = make_volume()
    holder = unique("lock")
    subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--name",
            holder,
            "-v",
            f"{volume}:/home/app/.codex",
            JOB_IMAGE,
            "sh",
            "-c",
            "echo holding; exec sleep infinity",  # until the test removes it
        ],
        check=True,
        capture_output=True,
    )
    try:
        # The entry point starts the command only once it holds the lock.
        wait_for_output(holder, "holding")
        second = run("-v", f"{volume}:/home/app/.codex", JOB_IMAGE, "true")
        assert second.returncode == 75 and "auth volume busy" in second.stderr
    finally:
        subprocess.run(["docker", "rm", "-f", holder], check=False, capture_output=True)
    after = run("-v", f"{volume}:/home/app/.codex", JOB_IMAGE, "true")
    assert after.returncode == 0  # the lock died with its holder


def test_lock_wrapper_workspace_and_bad_run_id(client: Any) -> None:
    ok = run("-e", "MOONMIND_CODEX_RUN_ID=run-9", JOB_IMAGE, "pwd")
    assert ok.stdout.strip() == "/work/run-9"
    bad = run("-e", "MOONMIND_CODEX_RUN_ID=../x", JOB_IMAGE, "pwd")
    assert bad.returncode == 64 and "not a valid run id" in bad.stderr


def test_broker_real_user_and_no_guest(client: Any, tmp_path: Path) -> None:
    with running_broker(client, tmp_path) as url:
        with kombu.Connection(url, connect_timeout=10) as conn:
            conn.connect()
        guest = url.replace(url.split("@")[0], "amqp://guest:guest")
        with (
            pytest.raises(AccessRefused, match="ACCESS_REFUSED"),
            kombu.Connection(guest, connect_timeout=10) as conn,
        ):
            conn.connect()
        # Refused from here even if guest existed (RabbitMQ keeps guest to loopback): the
        # broker's own user list shows it is gone, leaving only the configured user.
        broker = broker_container(client, url)
        users = broker.exec_run(["rabbitmqctl", "-q", "--formatter", "json", "list_users"])
        assert users.exit_code == 0, users.output
        assert [u["user"] for u in json.loads(users.output)] == ["moonmind"]


def test_broker_without_password_file_fails_clearly(client: Any) -> None:
    done = run(BROKER_IMAGE)
    assert done.returncode == 78
    assert "password file /run/secrets/moonmind_codex_broker_password is missing" in done.stderr


def _ready_lines(broker: Any) -> int:
    return broker.logs().decode("utf-8", "replace").count("moonmind-codex-broker: ready;")


def test_a_restarted_broker_keeps_its_user_and_a_changed_password_takes_effect(
    client: Any, tmp_path: Path
) -> None:
    with running_broker(client, tmp_path) as url:
        broker = broker_container(client, url)
        broker.restart(timeout=30)
        # Reconnect as soon as the restarted broker lets us in (the user is in its data), then
        # hold that connection through the start script's user set-up.
        deadline = time.monotonic() + 120
        while True:
            assert time.monotonic() < deadline, "the restarted broker never let the user in"
            conn = kombu.Connection(url, connect_timeout=5)
            try:
                conn.connect()
                break
            except (OSError, *conn.connection_errors):
                conn.release()
                time.sleep(0.1)
        try:
            assert _ready_lines(broker) == 1, "connected only after the set-up: nothing shown"
            while _ready_lines(broker) < 2:
                assert time.monotonic() < deadline, "the restarted broker never said ready"
                time.sleep(0.2)
            # Still open: the set-up kept the user (deleting it closes its connections).
            conn.default_channel.queue_declare("mmc-test-alive", auto_delete=True)
        finally:
            conn.release()

        # A rotated password (the file changed in place) is set on the next start.
        secret = next(tmp_path.glob("broker-password-*"))
        new_password = secrets.token_urlsafe(18)
        secret.write_text(new_password)
        broker.restart(timeout=30)
        while _ready_lines(broker) < 3:
            assert time.monotonic() < deadline + 120, "no ready line after the rotation"
            time.sleep(0.2)
        old_url = url
        new_url = url.replace(url.split("@")[0].rsplit(":", 1)[1], new_password)
        with kombu.Connection(new_url, connect_timeout=10) as conn:
            conn.connect()
        with (
            pytest.raises(AccessRefused, match="ACCESS_REFUSED"),
            kombu.Connection(old_url, connect_timeout=10) as conn,
        ):
            conn.connect()
