"""Pre-flight against real volumes, the real job image and the real `codex login status`.

Each state is made for real in a volume (a real `codex login --with-api-key`, fabricated
ChatGPT files written with the given owner and mode) and checked through ``run_preflight``.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from harness.logins import FAKE_API_KEY, JOB_IMAGE
from moonmind_codex.core.preflight_eval import PreflightResult
from moonmind_codex.engine.preflight import run_preflight
from moonmind_codex.settings import Settings, SettingsError
from moonmind_codex.store.runstore import RunStore
from tests.integration.conftest import VolumeFactory, in_volume, unique, write_auth
from tests.unit.helpers import assert_no_secret, chatgpt_auth

SettingsFor = Callable[..., Settings]
PROBE_LABEL = "io.moonmind.codex.role=probe"


def check(settings: Settings, client: Any) -> PreflightResult:
    result = run_preflight(settings, settings.served_shard.number, client)
    rendered = json.dumps(result.to_dict()) + result.message()
    assert_no_secret(rendered)  # the fabricated tokens never come out
    assert FAKE_API_KEY not in rendered and FAKE_API_KEY[-8:] not in rendered
    # Whatever the verdict, no probe container is left behind.
    volume = settings.served_shard.volume
    assert not client.containers.list(all=True, filters={"label": PROBE_LABEL, "volume": volume})
    return result


def assert_blocked(result: PreflightResult, settings: Settings, reason: str, fix: str) -> None:
    assert result.status == "blocked", result.message()
    assert reason in result.reason, result.reason
    message = result.message()
    for part in (
        f"shard {settings.shard}",
        settings.served_shard.volume,
        f"host {settings.host_name}",
        fix,
    ):
        assert part in message, (part, message)
    assert result.remediation and fix in result.remediation


@pytest.fixture(scope="module")
def api_key_volume(module_volume: VolumeFactory) -> str:
    return module_volume("auth", "api_key")


def test_api_key_login_passes(client: Any, api_key_volume: str, settings_for: SettingsFor) -> None:
    result = check(settings_for(api_key_volume), client)
    assert (result.status, result.auth_mode) == ("ok", "api_key"), result.message()
    checks = {c.name: c for c in result.findings}
    assert checks["codex login status"].status == "ok"
    assert checks["codex login status"].detail == "Logged in using an API key"
    assert result.remediation is None
    assert 0 < result.duration_s < 30


def test_fabricated_chatgpt_login_passes(
    client: Any, make_volume: VolumeFactory, settings_for: SettingsFor
) -> None:
    volume = make_volume("auth", "chatgpt")
    result = check(settings_for(volume), client)
    assert (result.status, result.auth_mode) == ("ok", "chatgpt"), result.message()
    checks = {c.name: c for c in result.findings}
    assert checks["codex login status"].detail == "Logged in using ChatGPT"
    assert checks["access token"].status == "ok" and "valid until" in checks["access token"].detail
    assert checks["auth.json permissions"].detail == "owned by 1000, mode 0600"


def test_expired_access_token_alone_is_fine(
    client: Any, make_volume: VolumeFactory, settings_for: SettingsFor
) -> None:
    # The CLI refreshes an expired access token itself (it can: the volume is writable).
    volume = make_volume("auth", "chatgpt_expired_access")
    result = check(settings_for(volume), client)
    assert result.status == "ok", result.message()
    assert "refreshes it" in {c.name: c for c in result.findings}["access token"].detail


def test_old_last_refresh_warns(
    client: Any, make_volume: VolumeFactory, settings_for: SettingsFor
) -> None:
    volume = make_volume("auth", "chatgpt_old_refresh")
    settings = settings_for(volume)
    result = check(settings, client)
    assert result.status == "warn", result.message()
    assert "30.0 days ago" in result.reason and "threshold 7" in result.reason
    assert result.remediation and "moonmind-codex login --shard 0" in result.remediation
    # The threshold is a setting.
    assert check(settings.with_overrides(last_refresh_warn_days=40), client).status == "ok"


RELOGIN = "moonmind-codex login --shard 0"
REPAIR = "moonmind-codex repair --shard 0"


@pytest.mark.parametrize(
    ("state", "reason", "fix"),
    [
        ("empty", "no auth.json: the volume is not logged in", RELOGIN),
        ("malformed", "auth.json is not valid JSON", RELOGIN),
        ("empty_object", "neither ChatGPT tokens nor an API key", RELOGIN),
        ("root_owned_file", "auth.json is owned by uid 0, not the job uid 1000", REPAIR),
        ("file_mode_0644", "auth.json has mode 0644, not 0600", REPAIR),
        ("dir_mode_0755", "the volume root has mode 0755, not 0700", REPAIR),
        # Read-only for the job uid: the CLI could not write refreshed tokens back.
        ("root_owned_dir", "the volume root is owned by uid 0", REPAIR),
    ],
)
def test_bad_logins_block_with_the_right_message(
    client: Any,
    make_volume: VolumeFactory,
    settings_for: SettingsFor,
    state: str,
    reason: str,
    fix: str,
) -> None:
    settings = settings_for(make_volume("auth", state))
    assert_blocked(check(settings, client), settings, reason, fix)


def test_directory_not_writable_by_the_job_uid_blocks(
    client: Any, make_volume: VolumeFactory, settings_for: SettingsFor
) -> None:
    settings = settings_for(make_volume("auth", "root_owned_dir"))
    writable = {c.name: c for c in check(settings, client).findings}["directory writable"]
    assert writable.status == "blocked" and "uid 1000 cannot write" in writable.detail
    # Owned by the job uid but 0500: the owner check passes, the write test still catches it.
    settings = settings_for(make_volume("auth", "dir_mode_0500"))
    result = check(settings, client)
    assert result.status == "blocked"
    assert {c.name: c.status for c in result.findings}["directory writable"] == "blocked"
    assert result.remediation and REPAIR in result.remediation


def test_read_only_filesystem_volume_blocks(client: Any, settings_for: SettingsFor) -> None:
    # A volume whose filesystem itself is read-only: a local-driver tmpfs mounted 'ro'.
    name = unique("ro")
    client.volumes.create(
        name,
        driver="local",
        driver_opts={"type": "tmpfs", "device": "tmpfs", "o": "ro,uid=1000,gid=1000,mode=0700"},
        labels={"io.moonmind.codex.test": "1"},
    )
    try:
        settings = settings_for(name)
        # The probe starts (auth volumes are mounted no_copy) and cannot write: owner and
        # modes cannot fix that, so the fix is to check the volume, not to repair it.
        assert_blocked(
            check(settings, client), settings, "Read-only file system", "docker volume inspect"
        )
    finally:
        client.volumes.get(name).remove(force=True)


def test_timeout_blocks_and_kills_the_probe(
    client: Any, api_key_volume: str, settings_for: SettingsFor
) -> None:
    settings = settings_for(api_key_volume, preflight_timeout_seconds=0.05)
    started = time.monotonic()
    assert_blocked(
        check(settings, client), settings, "did not finish within 0.05 s", "preflight --shard 0"
    )
    assert time.monotonic() - started < 15


def test_hanging_probe_is_killed_at_the_timeout(
    client: Any, make_volume: VolumeFactory, settings_for: SettingsFor
) -> None:
    # A probe that really hangs: auth.json is a FIFO nobody writes, so reading it blocks.
    volume = make_volume()
    in_volume(volume, "mkfifo -m 600 /home/app/.codex/auth.json")
    settings = settings_for(volume, preflight_timeout_seconds=3)
    started = time.monotonic()
    result = check(settings, client)
    elapsed = time.monotonic() - started
    assert_blocked(result, settings, "did not finish within 3 s", "preflight --shard 0")
    assert 3 <= elapsed < 15
    assert {c.name for c in result.findings} == {"timeout"}


def test_daemon_down_blocks(settings_for: SettingsFor, api_key_volume: str, tmp_path: Path) -> None:
    nowhere = tmp_path / "no-docker-here.sock"
    settings = settings_for(api_key_volume, docker_url=f"unix://{nowhere}")
    result = run_preflight(settings, 0)  # the check connects by itself
    assert_blocked(result, settings, "cannot reach the Docker engine", "start the Docker engine")
    assert str(nowhere) in result.reason


def test_missing_volume_blocks_and_is_not_created(client: Any, settings_for: SettingsFor) -> None:
    name = unique("never-created")
    settings = settings_for(name)
    assert_blocked(
        check(settings, client), settings, f"auth volume {name} does not exist", "site.yml"
    )
    with pytest.raises(docker.errors.NotFound):
        client.volumes.get(name)


def test_missing_job_image_blocks(
    client: Any, api_key_volume: str, settings_for: SettingsFor
) -> None:
    settings = settings_for(api_key_volume, job_image=f"{unique('no-such-image')}:latest")
    assert_blocked(check(settings, client), settings, "is not on host test-host", "site.yml")


def test_shard_out_of_range_is_bad_input(
    client: Any, api_key_volume: str, settings_for: SettingsFor
) -> None:
    with pytest.raises(SettingsError, match=r"shard 7 is out of range.*0\.\.2"):
        run_preflight(settings_for(api_key_volume), 7, client)


BROKEN_PROBE = """#!/bin/sh
# Stand-in for a broken probe; what it does depends on a marker file in the volume.
if [ -e /home/app/.codex/crash ]; then echo "Traceback: it broke" >&2; exit 3; fi
if [ -e /home/app/.codex/other-json ]; then echo '{"hello": "world"}'; exit 0; fi
echo "this is not a report"
"""


@pytest.fixture(scope="module")
def broken_probe_image(client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real job image with its probe replaced by one that crashes or prints garbage."""
    context = tmp_path_factory.mktemp("broken-probe")
    (context / "probe").write_text(BROKEN_PROBE)
    (context / "probe").chmod(0o755)
    (context / "Dockerfile").write_text(
        f"FROM {JOB_IMAGE}\nCOPY probe /usr/local/bin/moonmind-codex-probe\n"
    )
    tag = f"mmc-test-broken-probe-{secrets.token_hex(4)}:latest"
    client.images.build(path=str(context), tag=tag, rm=True, forcerm=True)
    yield tag
    client.images.remove(tag, force=True, noprune=False)


@pytest.mark.parametrize(
    ("marker", "reason"),
    [
        (None, "the probe printed no readable report"),
        ("other-json", "the probe printed no readable report"),
        ("crash", "the probe failed with exit code 3"),
    ],
)
def test_broken_probe_blocks(
    client: Any,
    make_volume: VolumeFactory,
    settings_for: SettingsFor,
    broken_probe_image: str,
    marker: str | None,
    reason: str,
) -> None:
    volume = make_volume()
    if marker:
        in_volume(volume, f"touch /home/app/.codex/{marker}")
    settings = settings_for(volume, job_image=broken_probe_image)
    result = check(settings, client)
    assert_blocked(result, settings, reason, "preflight --shard 0")
    assert "Traceback" not in result.message()


def test_repeated_checks_leave_no_container(
    client: Any, api_key_volume: str, settings_for: SettingsFor
) -> None:
    settings = settings_for(api_key_volume)
    before = {c.id for c in client.containers.list(all=True, filters={"label": PROBE_LABEL})}
    for _ in range(3):
        assert check(settings, client).status == "ok"
    after = {c.id for c in client.containers.list(all=True, filters={"label": PROBE_LABEL})}
    assert after <= before  # (other people's probes may come and go meanwhile)


def test_the_stand_alone_check_reports_what_the_run_store_holds_against_the_login(
    client: Any, make_volume: VolumeFactory, settings_for: SettingsFor, tmp_path: Path
) -> None:
    # preflight and login-check say what the shard's next phase would find: a login the server
    # rejected, or a fenced copy, is blocked while auth.json is still that login.
    volume, owner = make_volume("auth", "chatgpt"), make_volume("auth", "chatgpt")
    digest = in_volume(volume, "sha256sum /home/app/.codex/auth.json").split()[0]
    url = f"sqlite:///{tmp_path / 'store' / 'runs.sqlite3'}"
    settings = settings_for(volume, database_url=url)
    assert check(settings, client).status == "ok"  # no run store yet: nothing recorded

    store = RunStore.open(url)
    store.quarantine(volume, host="test-host", shard=0, reason="refresh_token_reused",
                     auth_digest=digest)  # fmt: skip
    rejected = check(settings, client)
    assert_blocked(rejected, settings, "the server rejected this login (refresh_token_reused, ",
                   "sign in again: the server rejected this login")  # fmt: skip
    store.lift_quarantine(volume, quarantined_digest=digest, auth_digest="f" * 64)
    assert check(settings, client).status == "ok"

    # A later copy of shard 1's login: fenced while it is that auth.json, clear once it changes.
    for name, shard, auth in ((owner, 1, "e" * 64), (volume, 0, digest)):
        store.register_login(name, host="test-host", shard=shard, fingerprint="c" * 64,
                             key_id="k" * 16, auth_digest=auth)  # fmt: skip
    fenced = check(settings, client)
    assert fenced.status == "blocked", fenced.message()
    assert f"same ChatGPT login as shard 1 (volume {owner} on host test-host)" in fenced.reason
    write_auth(volume, chatgpt_auth(last_refresh_days=1))  # signed in again: another login
    assert check(settings, client).status == "ok"
    store.engine.dispose()
