"""Worker start-up guards and the operator's login/repair commands, on real volumes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.logins import JOB_IMAGE, run_in_volume
from moonmind_codex.engine.login import LoginError, login_api_key, login_from_file, repair_volume
from moonmind_codex.engine.preflight import run_preflight
from moonmind_codex.settings import Settings
from moonmind_codex.worker.guards import WorkerStartupError, check_worker_startup
from tests.integration.conftest import unique, write_auth
from tests.unit.helpers import chatgpt_auth

SettingsFor = Callable[..., Settings]


def test_missing_volume_stops_the_worker(client: Any, settings_for: SettingsFor) -> None:
    settings = settings_for("mmc-test-absent-volume")
    with pytest.raises(WorkerStartupError, match=r"does not exist.*never falls back"):
        check_worker_startup(settings, client)
    assert "mmc-test-absent-volume" not in [v.name for v in client.volumes.list()]


def test_volume_held_by_another_worker_stops_the_second(
    client: Any, make_volume: Callable[..., str], settings_for: SettingsFor
) -> None:
    volume = make_volume()
    holder = client.containers.run(
        JOB_IMAGE,
        entrypoint=["sleep", "infinity"],  # until the test removes it
        command=[],
        detach=True,
        name=unique("holder"),
        labels={
            "io.moonmind.codex.role": "worker",
            "io.moonmind.codex.volume": volume,
            "io.moonmind.codex.shard": "0",
            "io.moonmind.codex.host": "host-x",
        },
    )
    try:
        settings = settings_for(volume, worker_container="moonmind-codex-worker-0")
        with pytest.raises(WorkerStartupError) as caught:
            check_worker_startup(settings, client)
        text = str(caught.value)
        assert f"auth volume {volume} is already used by worker {holder.name}" in text
        assert "host host-x" in text
        # The holder itself passes its own guard.
        own = settings_for(volume, worker_container=holder.name)
        assert check_worker_startup(own, client).status == "blocked"  # not logged in yet
    finally:
        holder.remove(force=True)


def test_guard_passes_and_returns_the_preflight(
    client: Any, make_volume: Callable[..., str], settings_for: SettingsFor
) -> None:
    volume = make_volume()
    write_auth(volume, chatgpt_auth())
    assert check_worker_startup(settings_for(volume), client).status == "ok"


def test_login_from_file_then_preflight_ok(
    client: Any, make_volume: Callable[..., str], settings_for: SettingsFor, tmp_path: Path
) -> None:
    volume = make_volume()
    source = tmp_path / "auth.json"
    source.write_text(json.dumps(chatgpt_auth()))
    settings = settings_for(volume)
    login_from_file(settings, 0, source, client)
    stat = run_in_volume(volume, "stat -c '%a %u' /home/app/.codex/auth.json").stdout.decode()
    assert stat.strip() == "600 1000"
    assert run_preflight(settings, 0, client).status == "ok"


def test_malformed_login_file_is_refused_and_volume_unchanged(
    client: Any, make_volume: Callable[..., str], settings_for: SettingsFor, tmp_path: Path
) -> None:
    volume = make_volume()
    write_auth(volume, chatgpt_auth())
    before = run_in_volume(volume, "sha256sum /home/app/.codex/auth.json").stdout
    for content in ('{"tokens": ', "{}", ""):
        source = tmp_path / "bad.json"
        source.write_text(content)
        with pytest.raises(LoginError, match=r"not a usable Codex login.*was not changed"):
            login_from_file(settings_for(volume), 0, source, client)
    assert run_in_volume(volume, "sha256sum /home/app/.codex/auth.json").stdout == before


def test_login_api_key_writes_0600(
    client: Any, make_volume: Callable[..., str], settings_for: SettingsFor
) -> None:
    volume = make_volume()
    settings = settings_for(volume)
    login_api_key(settings, 0, "sk-test-NOT-A-REAL-KEY-1111\n", client)
    stat = run_in_volume(volume, "stat -c '%a %u' /home/app/.codex/auth.json").stdout.decode()
    assert stat.strip() == "600 1000"
    result = run_preflight(settings, 0, client)
    assert (result.status, result.auth_mode) == ("ok", "api_key")
    with pytest.raises(LoginError, match="no API key"):
        login_api_key(settings, 0, "  \n", client)


def test_login_into_missing_volume_is_refused(client: Any, settings_for: SettingsFor) -> None:
    with pytest.raises(LoginError, match="does not exist"):
        login_api_key(settings_for("mmc-test-absent"), 0, "sk-x", client)


def test_repair_fixes_owner_and_modes(
    client: Any, make_volume: Callable[..., str], settings_for: SettingsFor
) -> None:
    volume = make_volume()
    write_auth(volume, chatgpt_auth(), owner="0:0", mode="644")
    run_in_volume(volume, "chmod 755 /home/app/.codex", user="0:0")
    settings = settings_for(volume)
    assert run_preflight(settings, 0, client).status == "blocked"
    repair_volume(settings, 0, client)
    assert run_preflight(settings, 0, client).status == "ok"
