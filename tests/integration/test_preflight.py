"""Pre-flight against real volumes, the real job image and the real `codex login status`."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from moonmind_codex.preflight import run_preflight
from moonmind_codex.settings import Settings, SettingsError
from tests.integration.conftest import api_key_login, run_in_volume, write_auth
from tests.unit.helpers import assert_no_secret, chatgpt_auth

SettingsFor = Callable[..., Settings]


def check(settings: Settings, client: Any) -> Any:
    result = run_preflight(settings, settings.own_shard, client)
    assert_no_secret(json.dumps(result.to_dict()) + result.message())
    assert "sk-test-NOT-A-REAL-KEY" not in json.dumps(result.to_dict())
    return result


def assert_blocked(result: Any, settings: Settings, reason: str, fix: str) -> None:
    assert result.status == "blocked", result.message()
    assert reason in result.reason
    message = result.message()
    for part in (
        f"shard {settings.shard}",
        settings.volume_for_shard(settings.own_shard),
        f"host {settings.host_name}",
        fix,
    ):
        assert part in message, (part, message)


def test_api_key_login_passes(
    client: Any, make_volume: Callable[..., str], settings_for: SettingsFor
) -> None:
    volume = make_volume()
    api_key_login(volume)
    result = check(settings_for(volume), client)
    assert (result.status, result.auth_mode) == ("ok", "api_key")
    assert {c.name: c.status for c in result.checks}["codex login status"] == "ok"


def test_chatgpt_login_passes_and_old_refresh_warns(
    client: Any, make_volume: Callable[..., str], settings_for: SettingsFor
) -> None:
    volume = make_volume()
    write_auth(volume, chatgpt_auth(access_exp_days=-1, last_refresh_days=2))
    settings = settings_for(volume)
    result = check(settings, client)
    assert (result.status, result.auth_mode) == ("ok", "chatgpt")
    assert "Logged in using ChatGPT" in json.dumps(result.to_dict())
    write_auth(volume, chatgpt_auth(last_refresh_days=30))
    warned = check(settings, client)
    assert warned.status == "warn" and "30.0 days ago" in warned.reason


@pytest.mark.parametrize(
    ("prepare", "reason", "fix"),
    [
        (None, "not logged in", "moonmind-codex login --shard 0"),
        (lambda v: write_auth(v, b'{"tokens": {'), "not valid JSON", "login --shard 0"),
        (lambda v: write_auth(v, {}), "neither ChatGPT tokens nor an API key", "login --shard 0"),
        (
            lambda v: write_auth(v, chatgpt_auth(), owner="0:0"),
            "owned by uid 0",
            "moonmind-codex repair --shard 0",
        ),
        (lambda v: write_auth(v, chatgpt_auth(), mode="644"), "mode 0644", "repair --shard 0"),
        (
            lambda v: (
                write_auth(v, chatgpt_auth()),
                run_in_volume(v, "chmod 755 /home/app/.codex"),
            ),
            "mode 0755",
            "repair --shard 0",
        ),
        # "Read-only" for the job uid: the CLI could not write refreshed tokens back.
        (
            lambda v: (
                write_auth(v, chatgpt_auth()),
                run_in_volume(
                    v, "chown 0:0 /home/app/.codex && chmod 755 /home/app/.codex", user="0:0"
                ),
            ),
            "owned by uid 0",
            "repair --shard 0",
        ),
    ],
    ids=[
        "no-login",
        "malformed",
        "empty-object",
        "wrong-owner",
        "wrong-file-mode",
        "wrong-dir-mode",
        "not-writable",
    ],
)
def test_bad_logins_block_with_the_right_message(
    client: Any,
    make_volume: Callable[..., str],
    settings_for: SettingsFor,
    prepare: Any,
    reason: str,
    fix: str,
) -> None:
    volume = make_volume()
    if prepare is not None:
        prepare(volume)
    settings = settings_for(volume)
    assert_blocked(check(settings, client), settings, reason, fix)


def test_unwritable_volume_is_reported_as_such(
    client: Any, make_volume: Callable[..., str], settings_for: SettingsFor
) -> None:
    volume = make_volume()
    write_auth(volume, chatgpt_auth())
    run_in_volume(
        volume, "chown 1000:1000 /home/app/.codex && chmod 500 /home/app/.codex", user="0:0"
    )
    result = check(settings_for(volume), client)
    assert result.status == "blocked"
    writable = {c.name: c for c in result.checks}["directory writable"]
    assert writable.status == "blocked" and "cannot write" in writable.detail


def test_read_only_filesystem_volume_blocks(client: Any, settings_for: SettingsFor) -> None:
    # A volume whose filesystem itself is read-only (tmpfs mounted ro).
    name = f"mmc-test-ro-{__import__('secrets').token_hex(4)}"
    client.volumes.create(
        name,
        driver="local",
        driver_opts={"type": "tmpfs", "device": "tmpfs", "o": "ro,uid=1000,gid=1000,mode=0700"},
    )
    try:
        settings = settings_for(name)
        # Docker itself refuses to start a container on it, and the check says so.
        assert_blocked(
            check(settings, client),
            settings,
            "read-only file system",
            "moonmind-codex repair --shard 0",
        )
    finally:
        client.volumes.get(name).remove(force=True)


def test_timeout_blocks(
    client: Any, make_volume: Callable[..., str], settings_for: SettingsFor
) -> None:
    volume = make_volume()
    api_key_login(volume)
    settings = settings_for(volume, preflight_timeout_seconds=0.05)
    assert_blocked(
        check(settings, client),
        settings,
        "did not finish within 0.05 s",
        "moonmind-codex preflight --shard 0",
    )
    assert not client.containers.list(all=True, filters={"volume": volume})


def test_daemon_down_blocks(settings_for: SettingsFor, make_volume: Callable[..., str]) -> None:
    settings = settings_for(make_volume(), docker_url="unix:///tmp/mmc-no-docker-here.sock")
    result = run_preflight(settings, 0)
    assert_blocked(result, settings, "cannot reach the Docker engine", "start the Docker engine")


def test_missing_volume_blocks_and_is_not_created(client: Any, settings_for: SettingsFor) -> None:
    settings = settings_for("mmc-test-never-created-volume")
    assert_blocked(
        check(settings, client), settings, "does not exist", "ansible-playbook playbooks/site.yml"
    )
    assert "mmc-test-never-created-volume" not in [v.name for v in client.volumes.list()]


def test_shard_out_of_range_is_bad_input(client: Any, settings_for: SettingsFor) -> None:
    with pytest.raises(SettingsError, match="out of range"):
        run_preflight(settings_for("x"), 7, client)


def test_probe_container_never_lingers(
    client: Any, make_volume: Callable[..., str], settings_for: SettingsFor
) -> None:
    volume = make_volume()
    api_key_login(volume)
    for _ in range(3):
        assert check(settings_for(volume), client).status == "ok"
    assert not client.containers.list(
        all=True, filters={"label": "io.moonmind.codex.role=probe", "volume": volume}
    )
