"""Keep-alive decisions (pure): who gets one, when, and why not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from moonmind_codex.core import health
from moonmind_codex.core.keepalive import (
    CLOCK_SKEW,
    Decision,
    KeepalivePolicy,
    LoginState,
    ShardActivity,
    decide,
    first_check_delay,
    keepalive_run_id,
    login_read_needed,
    run_id_prefix,
    stagger_offset,
)
from moonmind_codex.core.runs import check_id
from moonmind_codex.settings import SettingsError, load_settings
from moonmind_codex.worker.keepalive_scheduler import login_from_report, policy_of

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DAY, HOUR, MINUTE = timedelta(days=1), timedelta(hours=1), timedelta(minutes=1)
POLICY = KeepalivePolicy(
    refresh_after=7 * DAY,
    idle_after=30 * MINUTE,
    retry_after=12 * HOUR,
    stagger=60 * MINUTE,
    job_timeout=HOUR,
)
IDLE = ShardActivity(last_activity=NOW - 2 * HOUR)
STALE = LoginState("chatgpt", NOW - 8 * DAY)
FRESH = LoginState("chatgpt", NOW - 2 * DAY)


def verdict(
    activity: ShardActivity = IDLE,
    login: LoginState | None = STALE,
    *,
    shard: int = 0,
    count: int = 3,
    now: datetime = NOW,
) -> Decision:
    return decide(now, shard, count, activity, login, POLICY)


@pytest.mark.parametrize(
    ("activity", "login", "due", "reason"),
    [
        (IDLE, STALE, True, "idle and its login was refreshed 8.00 days ago"),
        (ShardActivity(), STALE, True, "idle"),  # a shard that never ran anything
        (IDLE, LoginState("chatgpt", None), True, "no last_refresh"),
        (IDLE, FRESH, False, "keep-alive due 2026-12-02T12:00:00Z"),
        (IDLE, LoginState("api_key", None), False, "(api_key) has no refresh token"),
        (IDLE, LoginState("access_token", NOW - 30 * DAY), False, "no refresh token"),
        (IDLE, LoginState(None, None), False, "(none) has no refresh token"),
        (IDLE, LoginState("unknown", NOW - 30 * DAY), False, "no refresh token"),
        (ShardActivity(IDLE.last_activity, quarantined=True), STALE, False, "quarantined"),
        (
            ShardActivity(IDLE.last_activity, keepalive_open_since=NOW - HOUR),
            STALE,
            False,
            "still open (sent 2026-11-27T11:00:00Z)",
        ),
        (
            ShardActivity(IDLE.last_activity, running_since=NOW - HOUR),
            STALE,
            False,
            "a phase is running on the shard (since 2026-11-27T11:00:00Z)",
        ),
        (ShardActivity(NOW - 29 * MINUTE), STALE, False, "not idle"),
        (ShardActivity(NOW + HOUR), STALE, False, "not idle"),  # another host's clock ahead
        (
            ShardActivity(IDLE.last_activity, last_keepalive_at=NOW - 11 * HOUR),
            STALE,
            False,
            "next not before 2026-11-27T13:00:00Z",
        ),
        (IDLE, None, False, "read its login"),
    ],
)
def test_decisions(
    activity: ShardActivity, login: LoginState | None, due: bool, reason: str
) -> None:
    decision = verdict(activity, login)
    assert decision.due is due
    assert reason in decision.reason


def test_the_refusals_come_in_order_quarantine_first() -> None:
    everything = ShardActivity(
        last_activity=NOW,
        running_since=NOW,
        keepalive_open_since=NOW,
        last_keepalive_at=NOW,
        quarantined=True,
    )
    assert "quarantined" in verdict(everything).reason
    no_quarantine = ShardActivity(NOW, NOW, NOW, NOW)
    assert "still open" in verdict(no_quarantine).reason
    assert "running" in verdict(ShardActivity(NOW, NOW, None, NOW)).reason
    assert "not idle" in verdict(ShardActivity(NOW, None, None, NOW)).reason
    assert "last keep-alive" in verdict(ShardActivity(None, None, None, NOW)).reason


@pytest.mark.parametrize(
    ("field", "age", "blocks"),
    [
        ("keepalive_open_since", 12 * HOUR - timedelta(seconds=1), True),
        ("keepalive_open_since", 12 * HOUR, False),  # taken as lost
        ("last_keepalive_at", 12 * HOUR - timedelta(seconds=1), True),
        ("last_keepalive_at", 12 * HOUR, False),
        ("running_since", 90 * MINUTE - timedelta(seconds=1), True),  # job timeout + idle
        ("running_since", 90 * MINUTE, False),  # a stale record of a job long stopped
        ("last_activity", 30 * MINUTE - timedelta(seconds=1), True),
        ("last_activity", 30 * MINUTE, False),
    ],
)
def test_each_window_ends_exactly_at_its_threshold(
    field: str, age: timedelta, blocks: bool
) -> None:
    activity = ShardActivity(**{field: NOW - age})  # type: ignore[arg-type]
    decision = verdict(activity)
    assert decision.due is not blocks, decision.reason
    assert decision.needs_login is False


def test_the_horizon_edge_and_the_clock() -> None:
    at_horizon = LoginState("chatgpt", NOW - 7 * DAY)
    assert verdict(login=at_horizon).due  # shard 0: no stagger offset
    just_before = LoginState("chatgpt", NOW - 7 * DAY + timedelta(seconds=1))
    early = verdict(login=just_before)
    assert not early.due
    assert early.recheck_at == NOW + timedelta(seconds=1)
    # A last_refresh slightly ahead (jitter) is fresh; far ahead is a wrong clock.
    jitter = verdict(login=LoginState("chatgpt", NOW + CLOCK_SKEW))
    assert not jitter.due and "keep-alive due" in jitter.reason
    future = verdict(login=LoginState("chatgpt", NOW + CLOCK_SKEW + timedelta(seconds=1)))
    assert not future.due and "in the future: check the clock" in future.reason
    assert future.recheck_at == NOW + 12 * HOUR
    assert verdict(login=LoginState("api_key", None)).recheck_at == NOW + 12 * HOUR
    assert verdict(login=STALE).recheck_at is None
    # A naive-looking timezone (not UTC) is the same instant.
    other_zone = NOW.astimezone(__import__("datetime").timezone(timedelta(hours=5)))
    assert verdict(now=other_zone, login=at_horizon).due


def test_shards_are_staggered_across_the_window() -> None:
    assert [stagger_offset(n, 4, 60 * MINUTE) for n in range(4)] == [
        0 * MINUTE,
        15 * MINUTE,
        30 * MINUTE,
        45 * MINUTE,
    ]
    assert stagger_offset(5, 4, 60 * MINUTE) == 15 * MINUTE
    assert stagger_offset(2, 3, timedelta(0)) == timedelta(0)
    # Three shards signed in at the same moment fire 20 minutes apart.
    signed_in = NOW - 7 * DAY
    login = LoginState("chatgpt", signed_in)
    due_at = [decide(NOW, n, 3, IDLE, login, POLICY).recheck_at or NOW for n in range(3)]
    assert due_at == [NOW, NOW + 20 * MINUTE, NOW + 40 * MINUTE]
    assert verdict(login=login, shard=0).due
    assert not verdict(login=login, shard=1).due
    assert verdict(login=login, shard=1, now=NOW + 20 * MINUTE).due
    assert not verdict(login=login, shard=2, now=NOW + 39 * MINUTE).due


def test_first_checks_are_spread_over_one_interval() -> None:
    assert [first_check_delay(n, 3, 300.0) for n in range(3)] == [0.0, 100.0, 200.0]
    assert first_check_delay(4, 4, 300.0) == 0.0
    assert first_check_delay(1, 1, 300.0) == 0.0


def test_run_ids_are_valid_per_shard_and_sort_by_time() -> None:
    first = keepalive_run_id(2, NOW)
    assert first == "keepalive-2-20261127T120000Z"
    assert check_id(first, "run_id") == first
    assert first.startswith(run_id_prefix(2))
    assert not keepalive_run_id(12, NOW).startswith(run_id_prefix(1))
    local = NOW.astimezone(__import__("datetime").timezone(-timedelta(hours=3)))
    assert keepalive_run_id(2, local) == first
    assert keepalive_run_id(2, NOW + timedelta(seconds=1)) > first


def test_a_login_is_read_again_after_activity_or_at_its_recheck_time() -> None:
    marker = IDLE.last_activity
    later = NOW + HOUR
    assert login_read_needed(NOW, IDLE, marker, None)  # nothing to go on
    assert not login_read_needed(NOW, IDLE, marker, later)
    assert login_read_needed(later, IDLE, marker, later)
    assert login_read_needed(NOW, ShardActivity(NOW - HOUR), marker, later)  # a phase ran
    assert login_read_needed(NOW, ShardActivity(), marker, later)


def test_the_login_comes_from_the_probe_report_without_tokens() -> None:
    report = {
        "inspection": {"auth_mode": "chatgpt", "last_refresh": "2026-11-20T12:00:00Z"},
        "auth_file": {"exists": True},
    }
    assert login_from_report(report) == LoginState("chatgpt", NOW - 7 * DAY)
    naive = {"inspection": {"auth_mode": "chatgpt", "last_refresh": "2026-11-20T12:00:00"}}
    assert login_from_report(naive).last_refresh == NOW - 7 * DAY
    assert login_from_report({"inspection": None}) == LoginState(None, None)
    garbled = {"inspection": {"auth_mode": 3, "last_refresh": "yesterday"}}
    assert login_from_report(garbled) == LoginState(None, None)
    assert login_from_report({}) == LoginState(None, None)
    assert login_from_report({**report, "auth_digest": "ab" * 32}).auth_digest == "ab" * 32
    assert login_from_report({**report, "auth_digest": 7}).auth_digest is None


def test_a_fenced_copy_gets_no_keepalive_until_the_shard_is_signed_in_again() -> None:
    copy = ShardActivity(last_activity=NOW - 2 * HOUR, fenced_auth_digest="c" * 64)
    fenced = verdict(copy, LoginState("chatgpt", NOW - 8 * DAY, auth_digest="c" * 64))
    assert fenced == Decision(
        False,
        "the login is a fenced copy of another shard's: sign this shard in with its own login, "
        "or resolve the fence (moonmind-codex login-fence)",
        recheck_at=NOW + 12 * HOUR,
    )
    # Another auth.json (a new sign-in) is judged by the usual rules.
    own = verdict(copy, LoginState("chatgpt", NOW - 8 * DAY, auth_digest="d" * 64))
    assert own.due and "refreshed 8.00 days ago" in own.reason
    assert verdict(copy, LoginState("chatgpt", NOW - 8 * DAY)).due  # digest unknown: not a copy
    # The fence is judged once the login is read, never before.
    assert verdict(copy, None).needs_login


def test_settings_give_the_policy_and_are_checked() -> None:
    settings = load_settings({})
    assert settings.keepalive_enabled
    assert settings.keepalive_command[:2] == ("codex", "exec")
    assert "--skip-git-repo-check" in settings.keepalive_command
    assert policy_of(settings) == KeepalivePolicy(
        refresh_after=7 * DAY,
        idle_after=30 * MINUTE,
        retry_after=12 * HOUR,
        stagger=60 * MINUTE,
        job_timeout=HOUR,
    )
    short = load_settings(
        {
            "MOONMIND_CODEX_KEEPALIVE_AFTER_DAYS": "0.5",
            "MOONMIND_CODEX_KEEPALIVE_IDLE_MINUTES": "0.05",
            "MOONMIND_CODEX_KEEPALIVE_RETRY_HOURS": "0.1",
            "MOONMIND_CODEX_KEEPALIVE_STAGGER_MINUTES": "0",
            "MOONMIND_CODEX_KEEPALIVE_TIMEOUT_SECONDS": "90",
            "MOONMIND_CODEX_KEEPALIVE_COMMAND": "codex exec --skip-git-repo-check 'say OK'",
            "MOONMIND_CODEX_KEEPALIVE_ENABLED": "false",
        }
    )
    assert policy_of(short).idle_after == timedelta(seconds=3)
    assert short.keepalive_command == ("codex", "exec", "--skip-git-repo-check", "say OK")
    assert short.keepalive_enabled is False
    for env, message in (
        ({"MOONMIND_CODEX_KEEPALIVE_COMMAND": "sh -c true"}, "ALLOWED_COMMANDS does not allow"),
        ({"MOONMIND_CODEX_KEEPALIVE_COMMAND": "codex 'open"}, "cannot be split into words"),
        ({"MOONMIND_CODEX_KEEPALIVE_COMMAND": "''"}, "is not a command"),
        ({"MOONMIND_CODEX_KEEPALIVE_STAGGER_MINUTES": "-0.5"}, "MINUTES=-0.5 must be >= 0"),
        ({"MOONMIND_CODEX_KEEPALIVE_AFTER_DAYS": "0"}, "AFTER_DAYS=0.0 must be > 0"),
        ({"MOONMIND_CODEX_KEEPALIVE_CHECK_SECONDS": "soon"}, "is not a number"),
        ({"MOONMIND_CODEX_KEEPALIVE_ENABLED": "maybe"}, "is not a yes/no value"),
        (
            {"MOONMIND_CODEX_KEEPALIVE_TIMEOUT_SECONDS": "43200"},
            "TIMEOUT_SECONDS=43200 must be shorter than",
        ),
    ):
        with pytest.raises(SettingsError, match=message):
            load_settings(env)
    # Off, the command need not be allowed (a fleet that runs no codex command at all).
    load_settings(
        {
            "MOONMIND_CODEX_KEEPALIVE_ENABLED": "false",
            "MOONMIND_CODEX_ALLOWED_COMMANDS": "specify",
        }
    )


# What the real Codex CLI 0.169 printed in a job container that cannot reach the sign-in and
# API services (this sandbox): a ChatGPT login (exit 1 after ~20 s) and an API key (no DNS:
# it waits for the network until stopped). Timestamps kept, nothing secret in either.
CHATGPT_WITHOUT_NETWORK = """\
Reading additional input from stdin...
2026-11-27T12:17:08.736185Z ERROR codex_models_manager::manager: failed to refresh available models: Connection failed: error sending request
OpenAI Codex v0.169.0
--------
workdir: /tmp
provider: openai
--------
user
Reply with OK.
2026-11-27T12:17:12.036906Z ERROR rmcp::transport::worker: worker quit with fatal: Transport channel closed, when Client(HttpRequest(HttpRequest("http/request failed: error sending request for url (https://chatgpt.com/backend-api/ps/mcp)")))
ERROR: Reconnecting... 2/5
ERROR: Reconnecting... 5/5
warning: Falling back from WebSockets to HTTPS transport. workspace routing discovery failed
ERROR: Reconnecting... 1/5
ERROR: workspace routing discovery failed
"""  # noqa: E501

API_KEY_WITHOUT_NETWORK = """\
2026-11-27T12:18:02.430732Z ERROR codex_api::endpoint::responses_websocket: failed to connect to Responses WebSocket stage=Unknown
ERROR: Reconnecting... 2/5
warning: Falling back from WebSockets to HTTPS transport. stream disconnected before completion: failed to lookup address information: Name does not resolve
ERROR: Reconnecting... waiting for network
ERROR: Reconnecting... waiting for network
"""  # noqa: E501


@pytest.mark.parametrize("output", [CHATGPT_WITHOUT_NETWORK, API_KEY_WITHOUT_NETWORK])
@pytest.mark.parametrize("exit_code", [1, None])
def test_a_keepalive_without_network_is_transient(output: str, exit_code: int | None) -> None:
    assert health.classify(output, exit_code) == health.Classification("transient", "network")


@pytest.mark.parametrize(
    "line",
    [
        "ERROR: Reconnecting... 2/5",
        "Reconnecting... 1/5",
        "ERROR: Reconnecting... waiting for network",
        "stream disconnected: failed to lookup address information: Name does not resolve",
    ],
)
def test_each_network_line_of_the_real_cli_alone_is_transient(line: str) -> None:
    assert health.classify(f"OpenAI Codex v0.169.0\n{line}\n", 1).reason == health.NETWORK
    assert health.classify(f"{line}\n", 0).kind == "ok"


def test_a_rejection_still_outranks_the_network_lines() -> None:
    output = API_KEY_WITHOUT_NETWORK + "ERROR: unexpected status 401 Unauthorized: bad key\n"
    assert health.classify(output, 1) == health.Classification("auth_rejected", health.UNAUTHORIZED)
    # "reconnecting" in the middle of some other line is not the CLI's retry line.
    assert health.classify("the job said: now reconnecting... 2/5\n", 1).kind == "other"
