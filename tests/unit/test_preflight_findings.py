"""The pre-flight judge's findings, word for word: each check's name, status, detail and fix.

``tests/unit/test_preflight_eval.py`` judges whole probe reports; this module pins what each
check says for each state it knows (the detail is what operators read after "Codex login check
BLOCKED for ..."), its boundaries, and how the verdict and its message are put together.
"""

from __future__ import annotations

from typing import Any

import pytest

from moonmind_codex.core.messages import Fix, render_fix
from moonmind_codex.core.preflight_eval import (
    ACCESS_TOKEN_WARN_HOURS,
    FUTURE_TOLERANCE_DAYS,
    UNVERIFIED_OFFLINE,
    Finding,
    LoginPolicy,
    PreflightResult,
    blocked_result,
    check_access_token_expiry,
    check_auth_file,
    check_cli_status,
    check_credential_store,
    check_directory,
    check_freshness,
    check_quarantine,
    evaluate,
    rejection,
    verdict,
)
from moonmind_codex.core.shard import Shard

SHARD = Shard(number=2, queue="codex-2", volume="codex_auth_2", host="h2")
HOME = "/home/app/.codex"
GOOD_DIR = {"exists": True, "uid": 1000, "mode": "0700", "writable": True}
GOOD_FILE = {"exists": True, "uid": 1000, "mode": "0600", "readable": True}
CHATGPT = {"auth_mode": "chatgpt", "problems": [], "parse_error": None}
EXPIRES = "2026-11-24T12:00:00Z"

DIR_OK = Finding("directory", "ok", "owned by 1000, mode 0700")
WRITABLE_OK = Finding("directory writable", "ok", "uid can create files (token refresh possible)")
PERMISSIONS_OK = Finding("auth.json permissions", "ok", "owned by 1000, mode 0600")
CHATGPT_OK = Finding("auth mode", "ok", "ChatGPT sign-in with access and refresh tokens")


@pytest.mark.parametrize(
    ("directory", "findings"),
    [
        (GOOD_DIR, [DIR_OK, WRITABLE_OK]),
        (
            {"exists": False, "error": "No such file or directory"},
            [
                Finding(
                    "directory",
                    "blocked",
                    f"{HOME} is not accessible to uid 1000 (No such file or directory)",
                    Fix.REPAIR,
                )
            ],
        ),
        (
            {"exists": None},
            [
                Finding(
                    "directory",
                    "blocked",
                    f"{HOME} is not accessible to uid 1000 (missing)",
                    Fix.REPAIR,
                )
            ],
        ),
        (
            {**GOOD_DIR, "uid": 0, "mode": "0755"},
            [
                Finding(
                    "directory owner",
                    "blocked",
                    "the volume root is owned by uid 0, not the job uid 1000",
                    Fix.REPAIR,
                ),
                WRITABLE_OK,
            ],
        ),
        (
            {**GOOD_DIR, "mode": "0755"},
            [
                Finding(
                    "directory mode",
                    "blocked",
                    "the volume root has mode 0755, not 0700",
                    Fix.REPAIR,
                ),
                WRITABLE_OK,
            ],
        ),
        (
            {**GOOD_DIR, "mode": 448},  # 0o700 as a number: the probe reports an octal string
            [
                Finding(
                    "directory mode",
                    "blocked",
                    "the volume root has mode 448, not 0700",
                    Fix.REPAIR,
                ),
                WRITABLE_OK,
            ],
        ),
        (
            {**GOOD_DIR, "mode": "rwx"},
            [
                Finding(
                    "directory mode",
                    "blocked",
                    "the volume root has mode rwx, not 0700",
                    Fix.REPAIR,
                ),
                WRITABLE_OK,
            ],
        ),
        (
            {**GOOD_DIR, "writable": False, "write_error": "Permission denied"},
            [
                DIR_OK,
                Finding(
                    "directory writable",
                    "blocked",
                    "uid 1000 cannot write to the volume (Permission denied); the Codex CLI must "
                    "write refreshed tokens back",
                    Fix.REPAIR,
                ),
            ],
        ),
        (
            {**GOOD_DIR, "writable": None, "write_error": "[Errno 30] Read-only file system"},
            [
                DIR_OK,
                Finding(
                    "directory writable",
                    "blocked",
                    "uid 1000 cannot write to the volume ([Errno 30] Read-only file system); the "
                    "Codex CLI must write refreshed tokens back",
                    Fix.CHECK_VOLUME,  # owner and modes cannot fix a read-only volume
                ),
            ],
        ),
    ],
)
def test_the_volume_root_findings(directory: dict[str, Any], findings: list[Finding]) -> None:
    assert check_directory(directory, HOME, 1000) == findings


@pytest.mark.parametrize(
    ("auth_file", "inspection", "findings"),
    [
        (
            {"exists": False},
            CHATGPT,
            [
                Finding(
                    "auth.json", "blocked", "no auth.json: the volume is not logged in", Fix.SIGN_IN
                )
            ],
        ),
        (
            {"exists": None, "error": "Permission denied"},
            CHATGPT,
            [
                Finding(
                    "auth.json",
                    "blocked",
                    "auth.json cannot be inspected by uid 1000 (Permission denied)",
                    Fix.REPAIR,
                )
            ],
        ),
        (
            {},
            CHATGPT,
            [
                Finding(
                    "auth.json",
                    "blocked",
                    "auth.json cannot be inspected by uid 1000 (unknown)",
                    Fix.REPAIR,
                )
            ],
        ),
        (
            {**GOOD_FILE, "uid": 0, "mode": "0644"},
            CHATGPT,
            [
                Finding(
                    "auth.json owner",
                    "blocked",
                    "auth.json is owned by uid 0, not the job uid 1000",
                    Fix.REPAIR,
                ),
                CHATGPT_OK,
            ],
        ),
        (
            {**GOOD_FILE, "mode": "0644"},
            CHATGPT,
            [
                Finding(
                    "auth.json mode", "blocked", "auth.json has mode 0644, not 0600", Fix.REPAIR
                ),
                CHATGPT_OK,
            ],
        ),
        (
            {**GOOD_FILE, "readable": False, "error": "Permission denied"},
            CHATGPT,
            [
                PERMISSIONS_OK,
                Finding(
                    "auth.json readable",
                    "blocked",
                    "auth.json cannot be read by uid 1000 (Permission denied)",
                    Fix.REPAIR,
                ),
            ],
        ),
        (GOOD_FILE, CHATGPT, [PERMISSIONS_OK, CHATGPT_OK]),
        (
            GOOD_FILE,
            {"parse_error": "auth.json is empty", "auth_mode": "unknown"},
            [
                PERMISSIONS_OK,
                Finding("auth.json content", "blocked", "auth.json is empty", Fix.SIGN_IN_AGAIN),
            ],
        ),
        (
            GOOD_FILE,
            {"auth_mode": "unknown", "problems": ["x"]},
            [
                PERMISSIONS_OK,
                Finding(
                    "auth.json content",
                    "blocked",
                    "auth.json holds neither ChatGPT tokens nor an API key nor an access token",
                    Fix.SIGN_IN_AGAIN,
                ),
            ],
        ),
        (
            GOOD_FILE,
            {"auth_mode": "chatgpt", "problems": ["ChatGPT login is missing refresh_token", "b"]},
            [
                PERMISSIONS_OK,
                Finding(
                    "auth.json content",
                    "blocked",
                    "ChatGPT login is missing refresh_token; b",
                    Fix.SIGN_IN_AGAIN,
                ),
            ],
        ),
        (
            GOOD_FILE,
            {"auth_mode": "api_key", "problems": []},
            [PERMISSIONS_OK, Finding("auth mode", "ok", "API key login (not a ChatGPT sign-in)")],
        ),
        (
            GOOD_FILE,
            {"auth_mode": "access_token", "access_token_kind": "personal_access_token"},
            [
                PERMISSIONS_OK,
                Finding(
                    "auth mode",
                    "ok",
                    "enterprise access token (personal access token); no refresh token: sign in "
                    "again before it expires",
                ),
            ],
        ),
        (
            GOOD_FILE,
            {"auth_mode": "access_token", "access_token_kind": None},
            [
                PERMISSIONS_OK,
                Finding(
                    "auth mode",
                    "ok",
                    "enterprise access token (access token); no refresh token: sign in again "
                    "before it expires",
                ),
            ],
        ),
    ],
)
def test_the_auth_file_findings(
    auth_file: dict[str, Any], inspection: dict[str, Any], findings: list[Finding]
) -> None:
    assert check_auth_file(auth_file, inspection, 1000) == findings


def chatgpt(age: object, **fields: Any) -> dict[str, Any]:
    return {**CHATGPT, "last_refresh_age_days": age, **fields}


@pytest.mark.parametrize(
    ("inspection", "findings"),
    [
        (
            chatgpt(2.04, access_token_expires_at=EXPIRES, access_token_expired=False),
            [
                Finding("access token", "ok", f"valid until {EXPIRES}"),
                Finding("last refresh", "ok", "2.0 days ago"),
            ],
        ),
        (
            chatgpt(None, access_token_expires_at=EXPIRES, access_token_expired=True),
            [
                Finding(
                    "access token",
                    "info",
                    f"expired at {EXPIRES}; the Codex CLI refreshes it on next use",
                )
            ],
        ),
        (chatgpt(True), []),  # not an age
        (chatgpt("3"), []),
        (
            chatgpt(7.0),  # exactly the threshold: not yet old
            [Finding("last refresh", "ok", "7.0 days ago")],
        ),
        (
            chatgpt(7.04),
            [
                Finding(
                    "last refresh",
                    "warn",
                    "last refreshed 7.0 days ago (warning threshold 7)",
                    Fix.REFRESH_SOON,
                )
            ],
        ),
        (
            chatgpt(-FUTURE_TOLERANCE_DAYS),  # clock jitter up to the tolerance: fresh
            [Finding("last refresh", "ok", "0.0 days ago")],
        ),
        (
            chatgpt(-2.5),
            [
                Finding(
                    "last refresh",
                    "warn",
                    "last_refresh is dated 2.5 days in the future: a clock or the file is wrong, "
                    "so the login's age cannot be judged",
                    Fix.CHECK_CLOCK,
                )
            ],
        ),
        # Only a usable ChatGPT login is judged for freshness.
        (chatgpt(30.0, problems=["x"]), []),
        ({"auth_mode": "api_key", "problems": [], "last_refresh_age_days": 30.0}, []),
        ({"auth_mode": "access_token", "problems": ["x"], "access_token_expired": True}, []),
    ],
)
def test_the_freshness_findings(inspection: dict[str, Any], findings: list[Finding]) -> None:
    assert check_freshness(inspection, 7.0) == findings


def test_the_warning_threshold_is_the_policys() -> None:
    [finding] = check_freshness(chatgpt(3.5), 3.25)
    assert finding == Finding(
        "last refresh",
        "warn",
        "last refreshed 3.5 days ago (warning threshold 3.25)",
        Fix.REFRESH_SOON,
    )


def access(expired: object, hours: object) -> dict[str, Any]:
    return {
        "auth_mode": "access_token",
        "problems": [],
        "access_token_expires_at": EXPIRES,
        "access_token_expired": expired,
        "access_token_remaining_hours": hours,
    }


@pytest.mark.parametrize(
    ("inspection", "finding"),
    [
        (
            access(True, -3.0),
            Finding(
                "access token",
                "blocked",
                f"the access token expired at {EXPIRES}; an access-token login has no refresh "
                "token, so the Codex CLI cannot renew it",
                Fix.SIGN_IN_AGAIN,
            ),
        ),
        (
            access(None, None),
            Finding("access token", "info", "expiry unknown (not a JWT); no refresh token"),
        ),
        (
            access(False, True),
            Finding("access token", "info", "expiry unknown (not a JWT); no refresh token"),
        ),
        (
            access(False, 5.04),
            Finding(
                "access token",
                "warn",
                f"the access token expires at {EXPIRES} (in 5.0 h) and cannot be refreshed",
                Fix.SIGN_IN_AGAIN,
            ),
        ),
        (
            access(False, -0.5),  # expired by the inspection's clock, not yet by the flag
            Finding(
                "access token",
                "warn",
                f"the access token expires at {EXPIRES} (in 0.0 h) and cannot be refreshed",
                Fix.SIGN_IN_AGAIN,
            ),
        ),
        (
            access(False, ACCESS_TOKEN_WARN_HOURS),
            Finding("access token", "ok", f"valid until {EXPIRES} (no refresh token)"),
        ),
    ],
)
def test_the_access_token_expiry_findings(inspection: dict[str, Any], finding: Finding) -> None:
    assert check_access_token_expiry(inspection) == [finding]
    assert check_freshness(inspection, 7.0) == [finding]


@pytest.mark.parametrize(
    ("store", "findings"),
    [
        ({}, []),
        (
            {"effective": "keyring", "source": "/work/r/.codex/config.toml", "pinned": False},
            [
                Finding(
                    "credential store",
                    "blocked",
                    "the Codex CLI would keep this login in its 'keyring' credential store (set "
                    "by /work/r/.codex/config.toml), not in auth.json on the volume",
                    Fix.PIN_FILE_STORE,
                )
            ],
        ),
        (
            {"effective": "file", "source": "default"},
            [
                Finding(
                    "credential store",
                    "warn",
                    "file storage is not pinned by a root-owned /etc/codex/managed_config.toml: a "
                    "job or a repository's .codex/config.toml could switch the login away from "
                    "auth.json",
                    Fix.PIN_FILE_STORE,
                )
            ],
        ),
        (
            {"effective": "file", "source": "managed", "pinned": True},
            [Finding("credential store", "ok", "file (pinned by /etc/codex/managed_config.toml)")],
        ),
    ],
)
def test_the_credential_store_findings(store: dict[str, Any], findings: list[Finding]) -> None:
    assert check_credential_store(store) == findings


DIGEST = "d" * 64
QUARANTINE = {"auth_digest": DIGEST, "reason": "refresh_token_reused", "since": "2026-11-20"}


@pytest.mark.parametrize(
    ("probe", "found"),
    [
        ({"auth_digest": DIGEST, "quarantine": QUARANTINE}, ("refresh_token_reused", "2026-11-20")),
        ({"auth_digest": "e" * 64, "quarantine": QUARANTINE}, None),  # a new login
        ({"auth_digest": None, "quarantine": QUARANTINE}, None),
        ({"auth_digest": DIGEST, "quarantine": "refresh_token_reused"}, None),
        ({"auth_digest": DIGEST}, None),
    ],
)
def test_a_quarantine_applies_only_to_the_login_it_was_recorded_for(
    probe: dict[str, Any], found: tuple[str, str] | None
) -> None:
    assert rejection(probe) == found
    expected = (
        []
        if found is None
        else [
            Finding(
                "server rejection",
                "blocked",
                "the server rejected this login (refresh_token_reused, 2026-11-20); the shard is "
                "quarantined until a new login is imported",
                Fix.SIGN_IN_REJECTED,
            )
        ]
    )
    assert check_quarantine(probe) == expected


@pytest.mark.parametrize(
    ("status_run", "auth_mode", "finding"),
    [
        (
            {"exit_code": 0, "summary": "Logged in using ChatGPT"},
            "chatgpt",
            Finding("codex login status", "ok", "Logged in using ChatGPT"),
        ),
        (
            {"exit_code": 1, "summary": "Not logged in"},
            "chatgpt",
            Finding("codex login status", "blocked", "exit 1: Not logged in", Fix.SIGN_IN_AGAIN),
        ),
        (
            {},
            None,
            Finding("codex login status", "blocked", "exit None: not run", Fix.SIGN_IN_AGAIN),
        ),
        (
            {"exit_code": None, "summary": "x", "error": "codex binary is not on PATH"},
            "chatgpt",
            Finding("codex login status", "blocked", "codex binary is not on PATH", Fix.RETRY),
        ),
        (
            {"exit_code": 1, "summary": UNVERIFIED_OFFLINE},
            "access_token",
            Finding("codex login status", "info", f"exit 1: {UNVERIFIED_OFFLINE}"),
        ),
        (
            {"exit_code": 1, "summary": UNVERIFIED_OFFLINE},
            "chatgpt",
            Finding(
                "codex login status", "blocked", f"exit 1: {UNVERIFIED_OFFLINE}", Fix.SIGN_IN_AGAIN
            ),
        ),
    ],
)
def test_the_cli_status_findings(
    status_run: dict[str, Any], auth_mode: str | None, finding: Finding
) -> None:
    assert check_cli_status(status_run, auth_mode) == finding


OK = Finding("a", "ok", "fine")
INFO = Finding("b", "info", "note")
WARN_1 = Finding("c", "warn", "first warning", Fix.CHECK_CLOCK)
WARN_2 = Finding("d", "warn", "second warning", Fix.REPAIR)
BLOCKED_NO_FIX = Finding("e", "blocked", "broken")


def judged(findings: list[Finding], **kwargs: Any) -> PreflightResult:
    options: dict[str, Any] = {"auth_mode": "chatgpt", "age_days": None, "duration_s": 0.1234}
    return verdict(SHARD, findings, **{**options, **kwargs})


def test_the_worst_finding_decides_and_the_first_of_equals_gives_reason_and_fix() -> None:
    result = judged([OK, INFO, WARN_1, WARN_2])
    assert (result.status, result.reason) == ("warn", "first warning")
    assert result.remediation == render_fix(Fix.CHECK_CLOCK, SHARD)
    assert result.findings == (OK, INFO, WARN_1, WARN_2)
    assert result.duration_s == 0.123
    assert judged([WARN_2, BLOCKED_NO_FIX]).status == "blocked"
    # A problem without a fix of its own is told to retry after checking the engine and image.
    assert judged([BLOCKED_NO_FIX]).remediation == render_fix(Fix.RETRY, SHARD)


def test_an_age_and_a_rejection_reach_the_fix_text() -> None:
    old = Finding("last refresh", "warn", "old", Fix.REFRESH_SOON)
    assert judged([old], age_days=9.96).remediation == render_fix(
        Fix.REFRESH_SOON, SHARD, age_days=9.96
    )
    rejected = Finding("server rejection", "blocked", "rejected", Fix.SIGN_IN_REJECTED)
    result = judged([rejected], rejected=("refresh_token_reused", "2026-11-20"))
    assert result.remediation == render_fix(
        Fix.SIGN_IN_REJECTED, SHARD, rejected=("refresh_token_reused", "2026-11-20")
    )


@pytest.mark.parametrize(
    ("auth_mode", "reason"),
    [
        ("chatgpt", "logged in with ChatGPT"),
        ("api_key", "logged in with an API key"),
        ("access_token", "logged in with an enterprise access token"),
        (None, "logged in with ChatGPT"),
    ],
)
def test_an_ok_verdict_names_the_sign_in_mode(auth_mode: str | None, reason: str) -> None:
    result = judged([OK, INFO], auth_mode=auth_mode)
    assert (result.status, result.reason, result.remediation) == ("ok", reason, None)
    assert result.auth_mode == auth_mode
    assert result.message() == f"Codex login check OK for {SHARD}: {reason}"


def test_a_problems_message_adds_the_auth_mode_and_the_fix() -> None:
    result = judged([WARN_2], auth_mode="api_key")
    assert result.message() == (
        f"Codex login check WARN for {SHARD}: second warning (auth mode api_key)\n"
        f"Fix: {render_fix(Fix.REPAIR, SHARD)}"
    )
    chatgpt = judged([BLOCKED_NO_FIX], auth_mode="chatgpt")
    assert chatgpt.message().splitlines()[0] == (
        f"Codex login check BLOCKED for {SHARD}: broken (auth mode chatgpt)"
    )
    unknown = judged([WARN_2], auth_mode="unknown")
    assert unknown.message().splitlines()[0] == (
        f"Codex login check WARN for {SHARD}: second warning"
    )


def test_a_result_is_flat_json_with_the_fix_kind_of_each_finding() -> None:
    result = judged([OK, WARN_1], auth_mode="chatgpt")
    assert result.to_dict() == {
        "status": "warn",
        "reason": "first warning",
        "remediation": render_fix(Fix.CHECK_CLOCK, SHARD),
        "duration_s": 0.123,
        "findings": [
            {"name": "a", "status": "ok", "detail": "fine", "fix": None},
            {"name": "c", "status": "warn", "detail": "first warning", "fix": "check-clock"},
        ],
        "auth_mode": "chatgpt",
        "checked_at": result.checked_at,
        "shard": 2,
        "queue": "codex-2",
        "volume": "codex_auth_2",
        "host": "h2",
    }
    assert len(result.checked_at) == 20 and result.checked_at.endswith("Z")


def test_a_blocked_result_around_the_login_uses_the_findings_fix_unless_told() -> None:
    engine = Finding("docker engine", "blocked", "cannot reach the engine", Fix.START_DOCKER)
    result = blocked_result(SHARD, engine, 1.23456)
    assert (result.status, result.reason, result.findings) == (
        "blocked",
        "cannot reach the engine",
        (engine,),
    )
    assert (result.remediation, result.duration_s) == (render_fix(Fix.START_DOCKER, SHARD), 1.235)
    assert blocked_result(SHARD, BLOCKED_NO_FIX, 0).remediation == render_fix(Fix.RETRY, SHARD)
    assert blocked_result(SHARD, engine, 0, remediation="do this").remediation == "do this"


def test_an_empty_probe_report_is_judged_with_every_default() -> None:
    result = evaluate({}, SHARD, LoginPolicy(job_uid=1000, warn_after_days=7.0), 0.5)
    assert result.findings == (
        Finding(
            "directory",
            "blocked",
            "the Codex home is not accessible to uid 1000 (missing)",
            Fix.REPAIR,
        ),
        Finding(
            "auth.json",
            "blocked",
            "auth.json cannot be inspected by uid 1000 (unknown)",
            Fix.REPAIR,
        ),
        Finding("codex login status", "blocked", "exit None: not run", Fix.SIGN_IN_AGAIN),
    )
    assert (result.status, result.auth_mode, result.remediation) == (
        "blocked",
        None,
        render_fix(Fix.REPAIR, SHARD),
    )
    # The probe names the Codex home it looked at: the finding quotes it.
    named = evaluate({"codex_home": "/srv/codex"}, SHARD, LoginPolicy(1000, 7.0), 0.5)
    assert named.reason == "/srv/codex is not accessible to uid 1000 (missing)"


def test_the_judge_passes_the_policy_age_and_quarantine_through() -> None:
    probe = {
        "codex_home": HOME,
        "dir": GOOD_DIR,
        "auth_file": GOOD_FILE,
        "inspection": chatgpt(9.0),
        "credential_store": {"effective": "file", "source": "managed", "pinned": True},
        "codex_status": {"exit_code": 0, "summary": "Logged in using ChatGPT"},
    }
    policy = LoginPolicy(job_uid=1000, warn_after_days=8.0)
    result = evaluate(probe, SHARD, policy, 0.5)
    assert (result.status, result.auth_mode) == ("warn", "chatgpt")
    assert result.remediation == render_fix(Fix.REFRESH_SOON, SHARD, age_days=9.0)
    assert evaluate(probe, SHARD, LoginPolicy(1000, 10.0), 0.5).status == "ok"
    rejected = {**probe, "auth_digest": DIGEST, "quarantine": QUARANTINE}
    result = evaluate(rejected, SHARD, policy, 0.5)
    assert result.findings[0].name == "server rejection"
    assert result.remediation == render_fix(
        Fix.SIGN_IN_REJECTED, SHARD, rejected=("refresh_token_reused", "2026-11-20")
    )
    # The job uid of the policy is the one every ownership check compares with.
    assert evaluate(probe, SHARD, LoginPolicy(1001, 10.0), 0.5).reason == (
        "the volume root is owned by uid 1000, not the job uid 1001"
    )
