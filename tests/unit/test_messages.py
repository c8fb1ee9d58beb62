"""The remediation texts operators read: each fix, word for word, for one shard.

The text is the product here (the runbook and the login check quote it, operators paste its
commands), so each is pinned whole: a changed word must be a deliberate change of this file.
"""

from __future__ import annotations

import pytest

from moonmind_codex.core import messages
from moonmind_codex.core.messages import Fix, render_fix
from moonmind_codex.core.shard import Shard

SHARD = Shard(number=3, queue="codex-3", volume="codex_auth_3", host="w2")
LOGIN = "moonmind-codex login --shard 3"
ALTERNATIVES = (
    "or copy a login made elsewhere: moonmind-codex login --shard 3 --from-file auth.json; "
    "or use an API key: moonmind-codex login --shard 3 --api-key-stdin"
)
SIGN_IN = f"on host w2, sign volume codex_auth_3 in: {LOGIN} ({ALTERNATIVES})"
SIGN_IN_AGAIN = f"on host w2, sign volume codex_auth_3 in again: {LOGIN} ({ALTERNATIVES})"
REPAIR = (
    "on host w2, restore owner and modes of volume codex_auth_3: moonmind-codex repair --shard 3"
)
CREATE_VOLUME = (
    "volume codex_auth_3 does not exist on host w2: provision it with ansible-playbook "
    "playbooks/site.yml --limit w2 (shard 3 must be listed in that host's "
    f"moonmind_codex_shards), then sign it in with {LOGIN}"
)
START_DOCKER = (
    "start the Docker engine on host w2 (systemctl start docker, or dockerd on hosts without "
    "systemd) and check it with `docker info`"
)
RETRY = (
    "on host w2, check the Docker engine and the job image, then retry: "
    "moonmind-codex preflight --shard 3"
)
CHECK_VOLUME = (
    "on host w2, volume codex_auth_3 must be a writable local volume: check `docker volume "
    "inspect codex_auth_3` (driver, options such as 'ro'); if it is wrong, remove it (docker "
    "volume rm codex_auth_3), recreate it with ansible-playbook playbooks/site.yml --limit w2 "
    f"and sign it in: {LOGIN}"
)
LOAD_IMAGE = (
    "build or load it on w2: scripts/setup.sh on a development machine, or ansible-playbook "
    "playbooks/site.yml --limit w2"
)
CHECK_CLOCK = (
    "on host w2, check the clock (timedatectl, or `date -u` against a trusted source); if it is "
    "right, the login in codex_auth_3 was written with a wrong date: sign it in again: "
    f"{LOGIN}"
)
PIN_FILE_STORE = (
    "use the fleet's job image, which pins the Codex CLI to file storage with a root-owned "
    '/etc/codex/managed_config.toml (cli_auth_credentials_store = "file"): ' + LOAD_IMAGE
)


def rejected_text(reason: str, when: str) -> str:
    return (
        f"sign in again: the server rejected this login ({reason}, {when}); on host w2, import "
        f"a new login into volume codex_auth_3: {LOGIN} ({ALTERNATIVES}); never run "
        "`codex logout` on a shard"
    )


@pytest.mark.parametrize(
    ("fix", "text"),
    [
        (Fix.SIGN_IN, SIGN_IN),
        (Fix.SIGN_IN_AGAIN, SIGN_IN_AGAIN),
        (Fix.REPAIR, REPAIR),
        (Fix.CREATE_VOLUME, CREATE_VOLUME),
        (Fix.START_DOCKER, START_DOCKER),
        (Fix.RETRY, RETRY),
        (Fix.CHECK_VOLUME, CHECK_VOLUME),
        (Fix.LOAD_IMAGE, LOAD_IMAGE),
        (Fix.CHECK_CLOCK, CHECK_CLOCK),
        (Fix.PIN_FILE_STORE, PIN_FILE_STORE),
    ],
)
def test_each_fix_renders_its_exact_text_for_the_shard(fix: Fix, text: str) -> None:
    assert render_fix(fix, SHARD) == text


def test_every_kind_of_fix_has_a_text_of_its_own() -> None:
    texts = [
        render_fix(fix, SHARD, age_days=9.0, rejected=("refresh_token_reused", "yesterday"))
        for fix in Fix
    ]
    assert len(set(texts)) == len(Fix)


def test_refresh_soon_gives_the_age_to_one_decimal_and_the_login_command() -> None:
    expected = (
        "the login in codex_auth_3 was last refreshed {age} days ago; if runs start to fail, on "
        f"host w2 run {LOGIN}"
    )
    assert render_fix(Fix.REFRESH_SOON, SHARD, age_days=8.26) == expected.format(age="8.3")
    # A warning without a known age still renders (as 0.0 days), never "None days".
    assert render_fix(Fix.REFRESH_SOON, SHARD) == expected.format(age="0.0")


def test_a_rejected_login_names_the_servers_reason_and_when_else_says_unknown() -> None:
    assert render_fix(
        Fix.SIGN_IN_REJECTED, SHARD, rejected=("refresh_token_reused", "2026-11-20T10:00:00Z")
    ) == rejected_text("refresh_token_reused", "2026-11-20T10:00:00Z")
    assert render_fix(Fix.SIGN_IN_REJECTED, SHARD) == rejected_text(
        "reason unknown", "time unknown"
    )


def test_a_volume_stuck_busy_names_the_wait_the_holder_filter_and_the_limits() -> None:
    assert messages.busy_too_long(SHARD, 2.5, 4) == (
        "the auth volume codex_auth_3 of shard 3 (volume codex_auth_3 on host w2) stayed busy "
        "through 4 retries (about 10 s): another job or an operator's login holds its lock. On "
        "host w2, find the holder with `docker ps --filter "
        "label=io.moonmind.codex.volume=codex_auth_3`, let it finish or stop it, then retry the "
        "run (limits: MOONMIND_CODEX_BUSY_MAX_RETRIES, MOONMIND_CODEX_BUSY_RETRY_SECONDS)"
    )


def test_a_volume_served_twice_names_the_other_worker_and_the_fix() -> None:
    assert messages.doubly_assigned("codex_auth_3", "codex-worker-3", "w1") == (
        "auth volume codex_auth_3 is already used by worker codex-worker-3 on host w1: each "
        "volume belongs to exactly one worker; fix the inventory (each shard on one host) and "
        "run playbooks/site.yml, or stop the other worker"
    )


def test_the_host_of_engine_and_image_fixes_is_the_one_given() -> None:
    assert messages.start_docker("w9") == START_DOCKER.replace("w2", "w9")
    assert messages.load_image("w9") == LOAD_IMAGE.replace("w2", "w9")


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (FileNotFoundError(2, "No such file or directory"), "No such file or directory"),
        (PermissionError(13, "Permission denied"), "Permission denied"),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), "not UTF-8 text"),
        (ValueError("embedded null byte"), "not a usable path"),
        (OSError("no errno, no strerror"), "not a usable path"),
    ],
)
def test_an_unreadable_file_is_explained_in_a_few_words(error: Exception, reason: str) -> None:
    """One explanation for the settings' _FILE twins, run files and login files."""
    assert messages.unreadable_reason(error) == reason
