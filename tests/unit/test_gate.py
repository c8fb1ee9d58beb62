"""The in-job pre-flight's pure parts: the CLI verdict's key, the cache, the verdict line, and
the classification of a phase's end (a login the server rejected quarantines its shard)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from moonmind_codex.core.health import (
    AUTH_REASONS,
    HEAD_BYTES,
    TAIL_BYTES,
    TRANSIENT_REASONS,
    classify,
)
from moonmind_codex.core.messages import Fix
from moonmind_codex.core.preflight_eval import check_quarantine
from moonmind_codex.core.probe_report import PROBE_VERSION
from moonmind_codex.engine.job_gate import (
    CliVerdictCache,
    gate_environment,
    read_verdict,
    verdict_line,
)
from moonmind_codex.engine.jobs import _VerdictFilter
from moonmind_codex.gate.check import (
    KNOWN_VERDICT_ENV,
    QUARANTINED_ENV,
    VERDICT_PREFIX,
    known_verdict,
    quarantine,
    verdict_key,
)
from moonmind_codex.gate.check import check as gate_check
from moonmind_codex.gate.probe import auth_digest
from moonmind_codex.settings import Settings

AUTH = b'{"OPENAI_API_KEY": "sk-test"}'


def test_the_key_changes_with_every_input_the_cli_reads() -> None:
    base = verdict_key("0.169.0", {"auth.json": AUTH, "config.toml": None})
    assert base is not None and len(base) == 64
    assert verdict_key("0.169.0", {"config.toml": None, "auth.json": AUTH}) == base  # no order
    others = {
        verdict_key("0.170.0", {"auth.json": AUTH, "config.toml": None}),
        verdict_key("0.169.0", {"auth.json": AUTH + b" ", "config.toml": None}),
        verdict_key("0.169.0", {"auth.json": AUTH, "config.toml": b""}),  # empty is not absent
        verdict_key("0.169.0", {"auth.json": None, "config.toml": AUTH}),  # moved between files
    }
    assert base not in others and len(others) == 4


def test_no_key_without_a_known_cli_version() -> None:
    assert verdict_key(None, {"auth.json": AUTH}) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a" * 64 + " Logged in using ChatGPT", ("a" * 64, "Logged in using ChatGPT")),
        (None, None),
        ("", None),
        ("a" * 63 + " Logged in", None),  # not a sha256
        ("a" * 64, None),  # no summary
    ],
)
def test_known_verdict_is_read_strictly(raw: str | None, expected: object) -> None:
    assert known_verdict(raw) == expected


def report(gate: str, exit_code: int = 0, key: str | None = "k" * 64) -> dict[str, Any]:
    return {
        "probe_version": PROBE_VERSION,
        "codex_home": "/home/app/.codex",
        "dir": {"exists": True, "uid": 1000, "mode": "0700", "writable": True},
        "auth_file": {"exists": True, "uid": 1000, "mode": "0600", "readable": True},
        "inspection": {"auth_mode": "api_key", "problems": []},
        "codex_status": {"exit_code": exit_code, "summary": "Logged in using an API key"},
        "cli_verdict_key": key,
        "gate": gate,
    }


def test_the_cache_learns_good_verdicts_and_forgets_on_a_bad_one() -> None:
    cache = CliVerdictCache()
    assert cache.known("v") is None
    cache.learn("v", report("go"))
    assert cache.known("v") == "k" * 64 + " Logged in using an API key"
    assert cache.known("other") is None
    cache.learn("v", report("blocked", exit_code=1))
    assert cache.known("v") is None
    cache.learn("v", report("go", key=None))  # unknown CLI version: nothing to remember
    assert cache.known("v") is None
    cache.learn("v", None)
    assert cache.known("v") is None


def test_the_job_container_gets_the_policy_and_the_known_verdict() -> None:
    settings = Settings(job_uid=1001, last_refresh_warn_days=3.5, preflight_timeout_seconds=9.0)
    environment = gate_environment(settings, "k" * 64 + " Logged in")
    assert environment["MOONMIND_CODEX_PREFLIGHT"] == "1"
    assert environment["MOONMIND_CODEX_GATE_JOB_UID"] == "1001"
    assert float(environment["MOONMIND_CODEX_GATE_WARN_DAYS"]) == 3.5
    assert float(environment["MOONMIND_CODEX_GATE_TIMEOUT_SECONDS"]) == 9.0
    assert environment[KNOWN_VERDICT_ENV] == "k" * 64 + " Logged in"
    assert KNOWN_VERDICT_ENV not in gate_environment(settings, None)


def line(content: dict[str, object]) -> bytes:
    return (VERDICT_PREFIX + json.dumps(content)).encode()


def test_the_verdict_line_is_only_the_first_stderr_line() -> None:
    verdict = line(report("go"))
    assert verdict_line(verdict + b"\nlater\n") == verdict
    assert verdict_line(b"job output first\n" + verdict + b"\n") is None
    assert verdict_line(b"") is None


def test_a_go_verdict_is_judged_with_the_workers_own_shard() -> None:
    settings = Settings(shard_count=3)
    shard = settings.locate_shard(2)
    result, parsed = read_verdict(settings, shard, line(report("go")), 0.5)
    assert (result.status, result.shard, result.blocked) == ("ok", shard, False)
    assert parsed is not None and parsed["gate"] == "go"


def test_a_blocked_verdict_names_the_shard_and_the_fix() -> None:
    settings = Settings(shard_count=3)
    shard = settings.locate_shard(1)
    result, _ = read_verdict(settings, shard, line(report("blocked", exit_code=1)), 0.5)
    assert result.blocked
    assert "codex_auth_1" in result.message() and "moonmind-codex login --shard 1" in (
        result.remediation or ""
    )


@pytest.mark.parametrize(
    ("verdict", "exit_code", "expected"),
    [
        (None, 1, "printed no readable verdict (exit code 1)"),
        (b"[moonmind-codex] pre-flight not json", 1, "printed no readable verdict"),
        (None, 73, "cannot open the root of volume codex_auth_0 to"),
    ],
)
def test_no_readable_verdict_blocks_with_the_reason(
    verdict: bytes | None, exit_code: int, expected: str
) -> None:
    settings = Settings()
    result, parsed = read_verdict(settings, settings.locate_shard(0), verdict, 0.1, exit_code)
    assert result.blocked and parsed is None
    assert expected in result.reason


def test_images_of_different_versions_are_named_when_they_disagree() -> None:
    settings = Settings()
    # The job image blocked a login this worker judges fine.
    result, _ = read_verdict(settings, settings.locate_shard(0), line(report("blocked")), 0.1)
    assert result.blocked and "different versions" in result.reason


def test_the_live_log_drops_the_verdict_line_wherever_the_chunks_split() -> None:
    verdict = line(report("go"))
    stream = verdict + b"\nfirst\nsecond " + VERDICT_PREFIX.encode() + b"kept\n"
    for size in (1, 7, 64, len(stream)):
        live = _VerdictFilter(active=True)
        out = b"".join(live.feed(stream[i : i + size]) for i in range(0, len(stream), size))
        assert out == b"first\nsecond " + VERDICT_PREFIX.encode() + b"kept\n"
    assert _VerdictFilter(active=False).feed(stream) == stream


def test_the_gate_imports_nothing_beyond_the_standard_library() -> None:
    """The job image has no third-party Python packages: the gate must not need any."""
    root = Path(__file__).parents[2]
    probe = (
        f"import sys; sys.path.insert(0, {str(root)!r}); import moonmind_codex.gate.check; "
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    # -S: no site-packages at all, as in the image.
    done = subprocess.run(
        [sys.executable, "-S", "-s", "-c", probe], capture_output=True, text=True, check=True
    )
    loaded = set(done.stdout.split())
    assert "moonmind_codex" in loaded
    assert not loaded & {"docker", "celery", "kombu", "sqlalchemy", "requests", "alembic"}


# --- Truthful health: the real Codex CLI's messages (moonmind_codex.core.health) ---------------
#
# Taken from the CLI's source (openai/codex, Rust):
# - codex-rs/login/src/auth/manager.rs: REFRESH_TOKEN_EXPIRED_MESSAGE, REFRESH_TOKEN_REUSED_MESSAGE,
#   REFRESH_TOKEN_INVALIDATED_MESSAGE, REFRESH_TOKEN_UNKNOWN_MESSAGE (a refresh answered 401 with no
#   known code), REFRESH_TOKEN_ACCOUNT_MISMATCH_MESSAGE; classify_refresh_token_failure maps the
#   server codes refresh_token_expired / _reused / _invalidated, and logs
#   "Failed to refresh token: {status}: {body}".
# - codex-rs/protocol/src/error.rs: UnexpectedResponseError ("unexpected status {status}: {body}"),
#   RetryLimitReachedError ("exceeded retry limit, last status: {status}"), CodexErr::Stream
#   ("stream disconnected before completion: {0}"), ConnectionFailedError ("Connection failed:
#   {source}"), InternalServerError, ServerOverloaded, UsageLimitReachedError.
# - codex-rs/exec/src/event_processor_with_human_output.rs: `codex exec` prints an error event as
#   "ERROR: {message}" on stderr; a stream error ("Reconnecting... {n}/{max}", from the core's turn
#   retry loop) as its plain message.
# - openai/codex issue #6028 (CLI 0.53): "Failed to refresh token: 401 Unauthorized: Your refresh
#   token has already been used to generate a new access token. Please try signing in again."
REFRESH_EXPIRED = (
    "ERROR: Your access token could not be refreshed because your refresh token has expired. "
    "Please log out and sign in again."
)
REFRESH_REUSED = (
    "ERROR: Your access token could not be refreshed because your refresh token was already "
    "used. Please log out and sign in again."
)
REFRESH_INVALIDATED = (
    "ERROR: Your access token could not be refreshed because your refresh token was revoked. "
    "Please log out and sign in again."
)
REFRESH_UNKNOWN_401 = (
    "ERROR: Your access token could not be refreshed. Please log out and sign in again."
)
ACCOUNT_MISMATCH = (
    "ERROR: Your access token could not be refreshed because you have since logged out or "
    "signed in to another account. Please sign in again."
)
REFRESH_LOGGED_BODY = (
    'Failed to refresh token: 401 Unauthorized: {"error": {"message": "Your refresh token has '
    'already been used to generate a new access token. Please try signing in again.", "type": '
    '"invalid_request_error", "param": null, "code": "refresh_token_reused"}}'
)
OLD_CLI_REUSED = (
    "■ Failed to refresh token: 401 Unauthorized: Your refresh token has already been used to "
    "generate a new access token. Please try signing in again."
)
API_401 = (
    "ERROR: unexpected status 401 Unauthorized: Incorrect API key provided: sk-test-***-0000. "
    "You can find your API key at https://platform.openai.com/account/api-keys., "
    "url: https://api.openai.com/v1/responses, request id: req_123"
)
RETRY_429 = "ERROR: exceeded retry limit, last status: 429 Too Many Requests, request id: req_1"
USAGE_LIMIT = "ERROR: You've hit your usage limit. Try again later."
RETRY_500 = "ERROR: exceeded retry limit, last status: 500 Internal Server Error"
STATUS_502 = "ERROR: unexpected status 502 Bad Gateway: Unknown error"
HIGH_DEMAND = "ERROR: We're currently experiencing high demand, which may cause temporary errors."
STREAM = (
    "ERROR: stream disconnected before completion: error sending request for url "
    "(https://chatgpt.com/backend-api/codex/responses)"
)
CONNECTION = "ERROR: Connection failed: error sending request for url (https://api.openai.com/)"
RECONNECTING = "Reconnecting... 2/5 (stream disconnected before completion: idle timeout)"
# The same line without its cause: only "Reconnecting..." at the start of the line marks it.
BARE_RECONNECTING = "Reconnecting... 2/5"
REFRESH_503 = "Failed to refresh token: 503 Service Unavailable: upstream connect error"

# What `codex exec` prints around the error (its banner): none of it is a verdict.
BANNER = (
    "OpenAI Codex v0.169.0 (research preview)\n--------\nworkdir: /work/run-1\nmodel: gpt-5-codex\n"
    "--------\nuser\nimplement the plan\n"
)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (REFRESH_EXPIRED, "refresh_token_expired"),
        (REFRESH_REUSED, "refresh_token_reused"),
        (REFRESH_INVALIDATED, "refresh_token_invalidated"),
        (REFRESH_UNKNOWN_401, "refresh_token_rejected"),
        (ACCOUNT_MISMATCH, "account_changed"),
        (REFRESH_LOGGED_BODY, "refresh_token_reused"),
        (OLD_CLI_REUSED, "refresh_token_reused"),
        (API_401, "401 unauthorized"),
    ],
)
def test_the_clis_permanent_login_failures_are_rejections(line: str, reason: str) -> None:
    found = classify(BANNER + line + "\n", 1)
    assert (found.kind, found.reason, found.rejected) == ("auth_rejected", reason, True)
    assert found.reason in AUTH_REASONS


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (RETRY_429, "429 rate limited"),
        (USAGE_LIMIT, "usage limit"),
        (RETRY_500, "5xx server error"),
        (STATUS_502, "5xx server error"),
        (HIGH_DEMAND, "5xx server error"),
        (REFRESH_503, "5xx server error"),
        (STREAM, "network"),
        (CONNECTION, "network"),
        (RECONNECTING, "network"),
    ],
)
def test_the_clis_transient_failures_do_not_reject_the_login(line: str, reason: str) -> None:
    found = classify(BANNER + line + "\n", 1)
    assert (found.kind, found.reason, found.rejected) == ("transient", reason, False)


def test_a_rejection_outranks_the_retries_before_it_and_success_is_ok() -> None:
    retried = "\n".join([BANNER, RECONNECTING, RETRY_429, REFRESH_REUSED])
    assert classify(retried, 1).reason == "refresh_token_reused"
    # A run that recovered (exit 0) is fine whatever it printed on the way.
    assert classify("\n".join([RECONNECTING, REFRESH_REUSED]), 0).kind == "ok"
    assert classify(BANNER + "tests failed: 3\n", 1).kind == "other"
    assert classify("", 1).kind == "other"
    # A job killed at its timeout is still read.
    assert classify(STREAM + "\n[moonmind-codex] killed after the 60 s timeout\n", None).kind == (
        "transient"
    )


def test_colours_are_ignored_and_only_a_bounded_head_and_tail_are_read() -> None:
    coloured = "\x1b[31mERROR:\x1b[0m " + REFRESH_REUSED.removeprefix("ERROR: ")
    assert classify(coloured, 1).reason == "refresh_token_reused"
    filler = "x" * 100 + "\n"
    middle = filler * (HEAD_BYTES // 100) + REFRESH_REUSED + "\n" + filler * (TAIL_BYTES // 50)
    assert classify(middle, 1).kind == "other"  # buried mid-log: not read
    assert classify(REFRESH_REUSED + "\n" + filler * 2000, 1).rejected  # near the start
    assert classify(filler * 2000 + REFRESH_REUSED, 1).rejected  # at the end


def test_the_clis_lines_match_in_any_letter_case() -> None:
    assert classify(REFRESH_EXPIRED.upper(), 1).reason == "refresh_token_expired"
    assert classify(RECONNECTING.lower(), 1).reason == "network"


def test_a_colour_code_before_an_anchored_line_is_removed_not_replaced() -> None:
    # "Reconnecting... n/m" only counts at the start of a line: the colour must vanish entirely.
    assert classify("\x1b[33m" + BARE_RECONNECTING, 1).reason == "network"
    assert classify("[x] " + BARE_RECONNECTING, 1).kind == "other"


def test_an_output_of_exactly_head_plus_tail_is_read_whole() -> None:
    # At the limit nothing is cut: a line across the head's end is still one line.
    lines = ("x" * 99 + "\n") * (HEAD_BYTES // 100 - 1)
    # "unexpected status 401" starts 5 bytes before the head's end ("ERROR: " is 7 bytes).
    body = lines + "x" * (HEAD_BYTES - 12 - len(lines)) + API_401
    output = body + "y" * (HEAD_BYTES + TAIL_BYTES - len(body))
    assert len(output) == HEAD_BYTES + TAIL_BYTES
    assert classify(output, 1).reason == "401 unauthorized"
    # One byte more and the head and tail are read apart: the line is cut at the head's end.
    assert classify(output + "y", 1).kind == "other"


def test_the_tail_is_the_last_tail_bytes_read_from_the_start_of_a_line() -> None:
    # The tail begins with "Reconnecting...", which only counts as a line's first word; in the
    # whole output it follows other text on the same line, so only a cut that starts the tail
    # on a line of its own (and removes nothing else) reads it.
    tail = BARE_RECONNECTING + "\n" + "y" * (TAIL_BYTES - len(BARE_RECONNECTING) - 1)
    output = "x" * (HEAD_BYTES + 1000) + tail
    assert classify(output, 1).reason == "network"
    # A rejection past the first TAIL_BYTES but before the tail is in the unread middle.
    filler = ("x" * 99 + "\n") * (TAIL_BYTES // 100 + 50)
    assert classify(filler + API_401 + "\n" + filler, 1).kind == "other"


def test_the_reason_is_a_fixed_token_never_text_from_the_output() -> None:
    found = classify(API_401, 1)
    assert found.reason == "401 unauthorized" and "sk-" not in (found.reason or "")
    for line in (REFRESH_LOGGED_BODY, API_401, RETRY_429, STREAM):
        reason = classify(line, 1).reason
        assert reason is not None and reason in AUTH_REASONS | TRANSIENT_REASONS


# --- The quarantine in the gate and the judge --------------------------------------------------


def test_the_gate_reports_a_digest_of_auth_json_and_reads_the_quarantine_strictly() -> None:
    assert auth_digest(AUTH) == hashlib.sha256(AUTH).hexdigest()
    assert auth_digest(None) is None
    digest = "d" * 64
    assert quarantine(f"{digest} 401 unauthorized 2026-11-28T10:00:00Z") == {
        "auth_digest": digest,
        "reason": "401 unauthorized",
        "since": "2026-11-28T10:00:00Z",
    }
    for raw in (None, "", "short reason 2026", f"{digest}", f"{digest} 2026-11-28T10:00:00Z"):
        assert quarantine(raw) is None


def test_the_gate_blocks_the_rejected_login_and_lets_a_new_one_through(tmp_path: Path) -> None:
    home = tmp_path / "codex"
    home.mkdir(mode=0o700)
    (home / "auth.json").write_bytes(AUTH)
    (home / "auth.json").chmod(0o600)
    now = datetime.now(UTC)
    known = "Logged in using an API key"
    base = {"MOONMIND_CODEX_GATE_JOB_UID": str(os.getuid())}
    first, _ = gate_check(base, home, now)
    key = first["cli_verdict_key"]
    env = {**base, KNOWN_VERDICT_ENV: f"{key} {known}"} if key else dict(base)
    digest = hashlib.sha256(AUTH).hexdigest()
    rejected = {**env, QUARANTINED_ENV: f"{digest} refresh_token_reused 2026-11-28T10:00:00Z"}
    report, go_on = gate_check(rejected, home, now)
    assert report["auth_digest"] == digest and report["quarantine"]["reason"] == (
        "refresh_token_reused"
    )
    [finding] = check_quarantine(report)
    assert finding.status == "blocked" and "refresh_token_reused" in finding.detail
    assert not go_on and report["gate"] == "blocked"
    # A new login was imported: another digest, the gate goes on as far as the quarantine goes.
    (home / "auth.json").write_bytes(AUTH.replace(b"sk-test", b"sk-new"))
    report, _ = gate_check(rejected, home, now)
    assert report["auth_digest"] != digest
    assert check_quarantine(report) == []


def test_a_quarantined_login_blocks_with_the_servers_reason_and_the_login_command() -> None:
    settings = Settings(shard_count=3)
    shard = settings.locate_shard(2)
    verdict = report("blocked")
    verdict["auth_digest"] = "d" * 64
    verdict["quarantine"] = {
        "auth_digest": "d" * 64,
        "reason": "refresh_token_reused",
        "since": "2026-11-28T10:00:00Z",
    }
    result, _ = read_verdict(settings, shard, line(verdict), 0.1)
    assert result.blocked and result.findings[0].fix is Fix.SIGN_IN_REJECTED
    assert result.remediation is not None and result.remediation.startswith(
        "sign in again: the server rejected this login (refresh_token_reused, 2026-11-28T10:00:00Z)"
    )
    assert "moonmind-codex login --shard 2" in result.remediation
    assert "codex logout" in result.remediation  # ... never to be run on a shard
    assert result.to_dict()["findings"][0]["fix"] == "sign-in-rejected"
    # Another login in the volume: the quarantine does not apply.
    verdict["auth_digest"] = "e" * 64
    verdict["gate"] = "go"
    result, _ = read_verdict(settings, shard, line(verdict), 0.1)
    assert result.status == "ok"


def test_the_job_container_gets_the_quarantine_only_when_there_is_one() -> None:
    settings = Settings()
    value = "d" * 64 + " 401 unauthorized 2026-11-28T10:00:00Z"
    assert gate_environment(settings, None, value)[QUARANTINED_ENV] == value
    assert QUARANTINED_ENV not in gate_environment(settings, None)
    assert QUARANTINED_ENV not in gate_environment(settings, None, None)
