from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from moonmind_codex.core.authfile import inspect_auth_json
from moonmind_codex.core.messages import Fix
from moonmind_codex.core.preflight_eval import (
    ACCESS_TOKEN_WARN_HOURS,
    UNVERIFIED_OFFLINE,
    Finding,
    LoginPolicy,
    blocked_result,
    evaluate,
)
from moonmind_codex.core.shard import Shard
from moonmind_codex.gate.probe import summarise_status_output
from tests.unit.helpers import (
    agent_identity_auth,
    api_key_auth,
    assert_no_secret,
    chatgpt_auth,
    personal_access_token_auth,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
SHARD = Shard(number=2, queue="codex-2", volume="codex_auth_2", host="h2")


def probe(
    auth: dict[str, Any] | None = None,
    *,
    dir_mode: str = "0700",
    dir_uid: int = 1000,
    writable: bool = True,
    file_mode: str = "0600",
    file_uid: int = 1000,
    status_exit: int = 0,
    raw: bytes | None = None,
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "codex_home": "/home/app/.codex",
        "dir": {
            "exists": True,
            "mode": dir_mode,
            "uid": dir_uid,
            "gid": 1000,
            "writable": writable,
            "write_error": None if writable else "permission denied",
        },
        "auth_file": {"exists": False},
        "inspection": None,
        "codex_status": {
            "exit_code": status_exit,
            "summary": "Logged in using ChatGPT",
            "error": None,
        },
    }
    if auth is not None or raw is not None:
        data = raw if raw is not None else json.dumps(auth).encode()
        report["auth_file"] = {
            "exists": True,
            "readable": True,
            "mode": file_mode,
            "uid": file_uid,
            "gid": 1000,
        }
        report["inspection"] = inspect_auth_json(data, NOW).to_dict()
    return report


def judge(report: dict[str, Any], warn_after_days: float = 7):
    return evaluate(report, SHARD, LoginPolicy(job_uid=1000, warn_after_days=warn_after_days), 0.5)


def test_chatgpt_login_ok() -> None:
    result = judge(probe(chatgpt_auth(NOW)))
    assert (result.status, result.auth_mode, result.remediation) == ("ok", "chatgpt", None)
    assert "logged in with ChatGPT" in result.message()


def test_api_key_login_ok_and_reported_as_such() -> None:
    result = judge(probe(api_key_auth()))
    assert (result.status, result.auth_mode) == ("ok", "api_key")
    assert result.reason == "logged in with an API key"


def test_expired_access_token_alone_is_fine() -> None:
    result = judge(probe(chatgpt_auth(NOW, access_exp_days=-3)))
    assert result.status == "ok"
    assert any(c.name == "access token" and c.status == "info" for c in result.findings)


def test_old_last_refresh_warns_with_threshold() -> None:
    result = judge(probe(chatgpt_auth(NOW, last_refresh_days=10)), warn_after_days=7)
    assert result.status == "warn"
    assert "10.0 days ago" in result.reason
    assert result.remediation is not None and "moonmind-codex login --shard 2" in result.remediation
    assert judge(probe(chatgpt_auth(NOW, last_refresh_days=10)), warn_after_days=14).status == "ok"


@pytest.mark.parametrize(
    ("report", "reason_part", "fix_part"),
    [
        (probe(None, status_exit=1), "not logged in", "moonmind-codex login --shard 2"),
        (probe(raw=b"{not json"), "not valid JSON", "moonmind-codex login --shard 2"),
        (probe({}), "neither ChatGPT tokens nor an API key", "moonmind-codex login --shard 2"),
        (probe(chatgpt_auth(NOW), file_uid=0), "owned by uid 0", "moonmind-codex repair --shard 2"),
        (probe(chatgpt_auth(NOW), file_mode="0644"), "mode 0644", "repair --shard 2"),
        (probe(chatgpt_auth(NOW), dir_mode="0755"), "mode 0755", "moonmind-codex repair --shard 2"),
        (probe(chatgpt_auth(NOW), dir_uid=0, writable=False), "owned by uid 0", "repair"),
        (probe(chatgpt_auth(NOW), writable=False), "cannot write", "repair"),
        (probe(chatgpt_auth(NOW), status_exit=1), "exit 1", "login --shard 2"),
    ],
)
def test_blocking_problems_name_shard_volume_host_and_fix(
    report: dict[str, Any], reason_part: str, fix_part: str
) -> None:
    result = judge(report)
    assert result.status == "blocked"
    assert reason_part in result.reason
    assert result.remediation is not None and fix_part in result.remediation
    message = result.message()
    for part in ("shard 2", "codex_auth_2", "host h2", "Fix:"):
        assert part in message
    assert_no_secret(json.dumps(result.to_dict()))


def test_new_volume_is_told_to_sign_in_and_a_broken_login_to_sign_in_again() -> None:
    fresh = judge(probe(None, status_exit=1)).remediation or ""
    broken = judge(probe(raw=b"{not json")).remediation or ""
    assert "sign volume codex_auth_2 in:" in fresh and "again" not in fresh
    assert "sign volume codex_auth_2 in again:" in broken


def test_unreadable_directory_blocks() -> None:
    report = probe(None)
    report["dir"] = {"exists": None, "error": "permission denied"}
    report["auth_file"] = {"exists": None, "error": "permission denied"}
    result = judge(report)
    assert result.status == "blocked"
    assert "not accessible" in result.reason


def test_codex_cli_missing_blocks() -> None:
    report = probe(api_key_auth())
    report["codex_status"] = {
        "exit_code": None,
        "summary": "codex CLI not found",
        "error": "codex binary is not on PATH",
    }
    assert judge(report).status == "blocked"


def test_blocked_result_for_infrastructure() -> None:
    finding = Finding(
        "docker engine", "blocked", "cannot reach the Docker engine", Fix.START_DOCKER
    )
    result = blocked_result(SHARD, finding, 0.01234)
    data = result.to_dict()
    assert data["findings"][0] == {
        "name": "docker engine",
        "status": "blocked",
        "detail": "cannot reach the Docker engine",
        "fix": "start-docker",
    }
    assert (data["shard"], data["queue"], data["volume"], data["host"]) == (
        2,
        "codex-2",
        "codex_auth_2",
        "h2",
    )
    assert result.duration_s == 0.012
    assert "Fix: start the Docker engine on host h2" in result.message()


def test_a_login_dated_in_the_future_is_not_fresh() -> None:
    result = judge(probe(chatgpt_auth(NOW, last_refresh_days=-3)))
    assert result.status == "warn"
    assert "3.0 days in the future" in result.reason
    assert result.remediation is not None and "check the clock" in result.remediation
    # Clock jitter of a few minutes is not a finding.
    jitter = judge(probe(chatgpt_auth(NOW, last_refresh_days=-1 / (24 * 60))))
    assert jitter.status == "ok"


def test_each_concern_names_its_fix_kind() -> None:
    kinds = {
        f.name: f.fix
        for f in judge(probe(chatgpt_auth(NOW), dir_mode="0755", status_exit=1)).findings
    }
    assert kinds["directory mode"] is Fix.REPAIR
    assert kinds["codex login status"] is Fix.SIGN_IN_AGAIN
    assert kinds["auth mode"] is None


PINNED = {"effective": "file", "source": "/etc/codex/managed_config.toml", "pinned": True}
POLICY = LoginPolicy(job_uid=1000, warn_after_days=7.0)


@pytest.mark.parametrize(
    ("store", "status", "reason_part"),
    [
        (PINNED, "ok", "logged in with ChatGPT"),
        ({"effective": "file", "source": "default", "pinned": False}, "warn", "not pinned"),
        (
            {"effective": "keyring", "source": "/home/app/.codex/config.toml", "pinned": False},
            "blocked",
            "'keyring' credential store (set by /home/app/.codex/config.toml)",
        ),
        (
            {"effective": "auto", "source": "/work/r/.codex/config.toml", "pinned": False},
            "blocked",
            "'auto' credential store (set by /work/r/.codex/config.toml)",
        ),
    ],
)
def test_the_credential_store_must_be_file_and_pinned(
    store: dict[str, Any], status: str, reason_part: str
) -> None:
    report = probe(chatgpt_auth(NOW))
    report["credential_store"] = store
    result = evaluate(report, SHARD, POLICY, 0.1)
    assert result.status == status
    assert reason_part in result.reason
    if status != "ok":
        assert "/etc/codex/managed_config.toml" in (result.remediation or "")
        assert "--limit h2" in (result.remediation or "")


def test_a_store_problem_is_named_before_the_cli_failure_it_causes() -> None:
    # keyring makes `codex login status` fail too; the store is the cause to report.
    report = probe(chatgpt_auth(NOW), status_exit=1)
    report["credential_store"] = {"effective": "keyring", "source": "x", "pinned": False}
    result = evaluate(report, SHARD, POLICY, 0.1)
    assert result.blocked and "credential store" in result.reason


def access_token_probe(auth: dict[str, Any], summary: str, exit_code: int) -> dict[str, Any]:
    """A probe of an access-token login; ``summary`` is what the CLI's status was reduced to."""
    report = probe(auth)
    report["codex_status"] = {"exit_code": exit_code, "summary": summary, "error": None}
    return report


# What `codex login status` (real CLI 0.169) printed for an Agent Identity login: with the
# sign-in service reachable, and in the probe's container, which has no network.
ONLINE = summarise_status_output("Logged in using access token\n")
OFFLINE = summarise_status_output(
    "Error checking login status: failed to request agent identity JWKS\n"
)


@pytest.mark.parametrize(("summary", "exit_code"), [(ONLINE, 0), (OFFLINE, 1)])
def test_access_token_login_ok(summary: str, exit_code: int) -> None:
    result = judge(access_token_probe(agent_identity_auth(NOW, exp_hours=72), summary, exit_code))
    assert (result.status, result.auth_mode) == ("ok", "access_token")
    assert result.reason == "logged in with an enterprise access token"
    assert any(f.name == "access token" and f.status == "ok" for f in result.findings)
    assert_no_secret(json.dumps(result.to_dict()) + result.message())


def test_the_offline_status_phrase_is_the_one_the_judge_knows() -> None:
    assert OFFLINE == UNVERIFIED_OFFLINE
    personal = "Error checking login status: failed to request personal access token metadata"
    assert summarise_status_output(personal) == UNVERIFIED_OFFLINE
    assert summarise_status_output("Logged in using personal access token") == (
        "Logged in using a personal access token"
    )


def test_expired_access_token_blocks_with_sign_in_again() -> None:
    # Unlike a ChatGPT login (whose CLI refreshes it), nothing can renew an access token.
    result = judge(access_token_probe(agent_identity_auth(NOW, exp_hours=-3), OFFLINE, 1))
    assert result.status == "blocked"
    assert (
        "no refresh token" in result.reason and "expired at 2026-11-22T09:00:00Z" in result.reason
    )
    worst = next(f for f in result.findings if f.name == "access token")
    assert worst.fix is Fix.SIGN_IN_AGAIN
    assert result.remediation is not None and "moonmind-codex login --shard 2" in result.remediation
    assert "(auth mode access_token)" in result.message()
    assert_no_secret(json.dumps(result.to_dict()) + result.message())


def test_access_token_near_expiry_warns() -> None:
    hours = ACCESS_TOKEN_WARN_HOURS / 4
    result = judge(access_token_probe(agent_identity_auth(NOW, exp_hours=hours), OFFLINE, 1))
    assert result.status == "warn"
    assert f"in {hours:.1f} h" in result.reason and "cannot be refreshed" in result.reason


def test_personal_access_token_without_expiry_is_ok() -> None:
    result = judge(access_token_probe(personal_access_token_auth(), OFFLINE, 1))
    assert (result.status, result.auth_mode) == ("ok", "access_token")
    assert any(f.name == "access token" and f.status == "info" for f in result.findings)
    assert_no_secret(json.dumps(result.to_dict()))


def test_unverified_offline_excuses_only_an_access_token_login() -> None:
    # A ChatGPT login whose status fails is still blocked, whatever the phrase.
    report = probe(chatgpt_auth(NOW))
    report["codex_status"] = {"exit_code": 1, "summary": OFFLINE, "error": None}
    assert judge(report).status == "blocked"
    # And an access-token login the CLI calls "Not logged in" is blocked too.
    blocked = judge(access_token_probe(agent_identity_auth(NOW), "Not logged in", 1))
    assert blocked.status == "blocked"


@pytest.mark.parametrize(
    ("auth", "mode"),
    [
        (chatgpt_auth(NOW), "chatgpt"),
        (api_key_auth(), "api_key"),
        (agent_identity_auth(NOW), "access_token"),
        (personal_access_token_auth(), "access_token"),
    ],
)
def test_status_json_shows_each_sign_in_mode(auth: dict[str, Any], mode: str) -> None:
    result = judge(access_token_probe(auth, OFFLINE if mode == "access_token" else ONLINE, 0))
    assert result.to_dict()["auth_mode"] == mode
