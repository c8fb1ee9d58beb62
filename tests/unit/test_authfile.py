from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from moonmind_codex.core.authfile import (
    TOKEN_FIELDS,
    inspect_auth_json,
    jwt_expiry,
    parse_timestamp,
)
from tests.unit.helpers import (
    agent_identity_auth,
    api_key_auth,
    assert_no_secret,
    chatgpt_auth,
    fake_jwt,
    personal_access_token_auth,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def inspect(data: object) -> dict:
    return inspect_auth_json(json.dumps(data).encode(), NOW).to_dict()


def test_chatgpt_login_is_recognised_with_expiry_and_refresh_age() -> None:
    result = inspect(chatgpt_auth(NOW, access_exp_days=2, last_refresh_days=3))
    assert result["logged_in"] is True
    assert result["auth_mode"] == "chatgpt"
    assert result["token_fields"] == {
        "id_token": True,
        "access_token": True,
        "refresh_token": True,
        "account_id": True,
    }
    assert result["access_token_expires_at"] == "2026-11-24T12:00:00Z"
    assert result["access_token_expired"] is False
    assert result["last_refresh_age_days"] == pytest.approx(3.0)


def test_expired_access_token_is_reported_but_still_a_login() -> None:
    result = inspect(chatgpt_auth(NOW, access_exp_days=-30))
    assert result["access_token_expired"] is True
    assert result["logged_in"] is True


def test_api_key_login() -> None:
    result = inspect(api_key_auth())
    assert result["auth_mode"] == "api_key"
    assert result["logged_in"] is True and result["has_api_key"] is True


def test_declared_api_key_mode_wins_over_leftover_tokens() -> None:
    data = chatgpt_auth(NOW) | api_key_auth() | {"auth_mode": "apikey"}
    assert inspect(data)["auth_mode"] == "api_key"


@pytest.mark.parametrize(
    "data", [{}, {"OPENAI_API_KEY": None}, {"OPENAI_API_KEY": "  "}, {"auth_mode": "chatgpt"}]
)
def test_empty_logins_are_not_logins(data: dict) -> None:
    # `codex login status` says "Logged in using ChatGPT" for {}: the inspection must not.
    result = inspect(data)
    assert result["logged_in"] is False
    assert result["auth_mode"] == "unknown"


def test_chatgpt_without_refresh_token_is_a_problem() -> None:
    data = chatgpt_auth(NOW)
    del data["tokens"]["refresh_token"]
    result = inspect(data)
    assert result["logged_in"] is False
    assert "refresh_token" in result["problems"][0]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b'{"tokens": ', "not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[1, 2]", "JSON list"),
        (b'"text"', "JSON str"),
    ],
)
def test_unparseable_files_report_a_position_never_content(raw: bytes, expected: str) -> None:
    result = inspect_auth_json(raw, NOW)
    assert result.parse_error is not None and expected in result.parse_error
    assert result.logged_in is False


def test_parse_error_never_quotes_the_file() -> None:
    raw = b'{"tokens": {"refresh_token": "SECRET-REFRESH-beef" oops}}'
    result = inspect_auth_json(raw, NOW)
    assert result.parse_error is not None and "line 1" in result.parse_error
    assert_no_secret(json.dumps(result.to_dict()))


def test_wrong_types_are_problems() -> None:
    assert "'tokens' is not an object" in inspect({"tokens": "x"})["problems"]
    assert (
        "tokens.access_token is not a string"
        in inspect({"tokens": {"access_token": 5, "refresh_token": "r"}})["problems"]
    )
    assert "OPENAI_API_KEY is not a string" in inspect({"OPENAI_API_KEY": 42})["problems"]
    assert (
        "last_refresh is not an ISO 8601 timestamp"
        in inspect(chatgpt_auth(NOW) | {"last_refresh": "yesterday"})["problems"]
    )


def test_no_secret_appears_in_the_inspection() -> None:
    for data in (chatgpt_auth(NOW), api_key_auth(), chatgpt_auth(NOW) | {"auth_mode": "weird"}):
        result = inspect_auth_json(json.dumps(data).encode(), NOW)
        assert_no_secret(json.dumps(result.to_dict()))
        assert_no_secret(repr(result))


def test_unknown_declared_mode_is_not_echoed() -> None:
    assert (
        inspect(chatgpt_auth(NOW) | {"auth_mode": "sk-SECRET-KEY-1234"})["declared_auth_mode"]
        == "other"
    )


def test_jwt_expiry_handles_garbage() -> None:
    assert jwt_expiry("not-a-jwt") is None
    assert jwt_expiry("a.b.c") is None
    assert jwt_expiry(None) is None
    assert jwt_expiry(fake_jwt(NOW + timedelta(hours=1), "m")) == NOW + timedelta(hours=1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-22T12:00:00Z", NOW),
        # A date alone with a 'Z': Python's fromisoformat refuses it unless the 'Z' is
        # replaced by an offset first (so that replacement is not redundant).
        ("2026-11-22Z", NOW.replace(hour=0)),
        ("2026-11-22z", NOW.replace(hour=0)),
        ("2026-11-22T13:00:00+01:00", NOW),
        ("2026-11-22T12:00:00", NOW),
        # The Codex CLI writes nanoseconds; they are truncated to microseconds, not rejected.
        ("2026-11-22T12:00:00.123456789Z", NOW + timedelta(microseconds=123456)),
        ("nonsense", None),
        (12, None),
    ],
)
def test_parse_timestamp(text: object, expected: datetime | None) -> None:
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # Regression corpus (issue 12): these ended in tracebacks.
        (b"[" * 100000, "nested too deeply"),
        (
            b'{"tokens": {"access_token": "a", "refresh_token": "r"}, '
            b'"last_refresh": "0001-01-01T00:00:00+01:00"}',
            "last_refresh is not an ISO 8601 timestamp",
        ),
        (
            b'{"tokens": {"access_token": "a", "refresh_token": "r"}, '
            b'"last_refresh": "9999-12-31T23:59:59-01:00"}',
            "last_refresh is not an ISO 8601 timestamp",
        ),
    ],
)
def test_hostile_files_give_a_finding_not_a_traceback(raw: bytes, expected: str) -> None:
    inspection = inspect_auth_json(raw, datetime.now(UTC))
    assert not inspection.logged_in
    assert expected in (inspection.parse_error or "") + "; ".join(inspection.problems)


# Access-token logins, in the shapes the real CLI 0.169 wrote for `codex login
# --with-access-token` (an Agent Identity JWT; a personal access token, `at-...`).


def test_agent_identity_token_is_an_access_token_login_with_its_expiry() -> None:
    result = inspect(agent_identity_auth(NOW, exp_hours=30))
    assert (result["auth_mode"], result["access_token_kind"]) == ("access_token", "agent_identity")
    assert result["logged_in"] is True and result["problems"] == []
    assert result["declared_auth_mode"] == "agentIdentity"
    # No refresh token is expected: an access-token login has no refresh chain.
    assert result["token_fields"]["refresh_token"] is False
    assert result["access_token_expires_at"] == "2026-11-23T18:00:00Z"
    assert result["access_token_expired"] is False
    assert result["access_token_remaining_hours"] == pytest.approx(30.0)


def test_expired_agent_identity_token_is_still_recognised_as_expired() -> None:
    result = inspect(agent_identity_auth(NOW, exp_hours=-2))
    assert result["auth_mode"] == "access_token" and result["access_token_expired"] is True
    assert result["access_token_remaining_hours"] == pytest.approx(-2.0)


def test_personal_access_token_has_no_known_expiry() -> None:
    result = inspect(personal_access_token_auth())
    assert (result["auth_mode"], result["access_token_kind"]) == (
        "access_token",
        "personal_access_token",
    )
    assert result["logged_in"] is True
    assert result["access_token_expires_at"] is None and result["access_token_expired"] is None


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"auth_mode": "agentIdentity", "agent_identity": 7}, "agent_identity is neither"),
        ({"auth_mode": "agentIdentity", "agent_identity": "  "}, "agent_identity is neither"),
        ({"personal_access_token": ["x"]}, "personal_access_token is not a token"),
    ],
)
def test_a_broken_access_token_is_not_a_login(data: dict, problem: str) -> None:
    result = inspect(data)
    assert result["logged_in"] is False
    assert any(p.startswith(problem) for p in result["problems"])


def test_declared_agent_identity_wins_over_leftover_chatgpt_tokens() -> None:
    data = chatgpt_auth(NOW) | agent_identity_auth(NOW)
    assert inspect(data)["auth_mode"] == "access_token"
    # Undeclared, the ChatGPT tokens decide (as before).
    data.pop("auth_mode")
    assert inspect(data)["auth_mode"] == "chatgpt"


@pytest.mark.parametrize(
    "data",
    [
        agent_identity_auth(NOW),
        agent_identity_auth(NOW, exp_hours=-5),
        personal_access_token_auth(),
        {
            "auth_mode": "agentIdentity",
            "agent_identity": {"agent_private_key": "at-SECRET-PAT-5678"},
        },
    ],
)
def test_access_token_inspection_never_holds_the_token(data: dict) -> None:
    assert_no_secret(json.dumps(inspect(data)))


@pytest.mark.parametrize(
    "data",
    [
        {"auth_mode": "agentIdentity", "personal_access_token": "at-SECRET-PAT-5678"},
        {"auth_mode": "personalAccessToken", "agent_identity": fake_jwt(NOW, "SECRET-ID-dead")},
        chatgpt_auth(NOW) | {"auth_mode": "agentIdentity"},
    ],
)
def test_a_declared_access_token_mode_needs_its_own_field(data: dict) -> None:
    # The real CLI refuses these ("agent identity auth is missing an agent identity token").
    result = inspect(data)
    assert result["logged_in"] is False
    assert any(p.startswith("auth_mode ") for p in result["problems"])
    assert_no_secret(json.dumps(result))


# Whole inspections, field by field: what the probe prints and the judge reads.


def jwt_with_payload(payload: object) -> str:
    """A JWT-shaped string whose payload is ``payload`` as JSON (header and signature fake)."""
    body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    return f"eyJhbGciOiJub25lIn0.{body}.sig"


def test_a_chatgpt_login_is_inspected_field_by_field() -> None:
    access_exp = NOW + timedelta(seconds=12345)  # 3.4292 h: two decimals are kept
    refreshed = NOW - timedelta(days=1000, seconds=1234)  # 1000.01428 days: three decimals
    data = {
        "auth_mode": "chatgpt",
        "OPENAI_API_KEY": None,
        "tokens": {
            "id_token": fake_jwt(NOW + timedelta(hours=2), "SECRET-ID-dead"),
            "access_token": fake_jwt(access_exp, "SECRET-ACCESS-f00d"),
            "refresh_token": "SECRET-REFRESH-beef",
            "account_id": "SECRET-ACCOUNT-cafe",
        },
        # Written with an offset: reported in UTC.
        "last_refresh": refreshed.astimezone(timezone(timedelta(hours=2))).isoformat(),
    }
    assert inspect(data) == {
        "parse_error": None,
        "auth_mode": "chatgpt",
        "declared_auth_mode": "chatgpt",
        "has_api_key": False,
        "token_fields": dict.fromkeys(TOKEN_FIELDS, True),
        "access_token_kind": None,
        "access_token_expires_at": "2026-11-22T15:25:45Z",
        "id_token_expires_at": "2026-11-22T14:00:00Z",
        "access_token_expired": False,
        "access_token_remaining_hours": 3.43,
        "last_refresh": "2024-02-26T11:39:26Z",
        "last_refresh_age_days": 1000.014,
        "problems": [],
        "logged_in": True,
    }


def test_a_file_that_is_not_a_login_is_inspected_as_nothing_at_all() -> None:
    assert inspect_auth_json(b"", NOW).to_dict() == {
        "parse_error": "auth.json is empty",
        "auth_mode": "unknown",
        "declared_auth_mode": None,
        "has_api_key": False,
        "token_fields": dict.fromkeys(TOKEN_FIELDS, False),
        "access_token_kind": None,
        "access_token_expires_at": None,
        "id_token_expires_at": None,
        "access_token_expired": None,
        "access_token_remaining_hours": None,
        "last_refresh": None,
        "last_refresh_age_days": None,
        "problems": [],
        "logged_in": False,
    }


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b" \n\t", "auth.json is empty"),
        (b'{"tokens": ', "auth.json is not valid JSON (Expecting value at line 1 column 12)"),
        (
            b'{\n  "a": 1,\n  oops}',
            "auth.json is not valid JSON (Expecting property name "
            "enclosed in double quotes at line 3 column 3)",
        ),
        (b'{"a": "\xff"}', "auth.json is not UTF-8 text (bad byte at offset 7)"),
        (b"[1, 2]", "auth.json holds a JSON list, not an object"),
        (b'"text"', "auth.json holds a JSON str, not an object"),
        (b"null", "auth.json holds a JSON NoneType, not an object"),
        (b"[" * 100000, "auth.json is not a Codex login (its JSON is nested too deeply)"),
        (
            b'{"n": ' + b"1" * 5000 + b"}",
            "auth.json is not a Codex login (it holds a number too long to read)",
        ),
    ],
)
def test_each_unreadable_file_gets_its_own_exact_parse_error(raw: bytes, error: str) -> None:
    assert inspect_auth_json(raw, NOW).parse_error == error


def test_an_access_token_expiring_exactly_now_is_expired() -> None:
    result = inspect(agent_identity_auth(NOW, exp_hours=0))
    assert (result["access_token_expired"], result["access_token_remaining_hours"]) == (True, 0.0)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"exp": 1795000000}, datetime(2026, 11, 18, 11, 6, 40, tzinfo=UTC)),
        ({"exp": 1795000000.5}, datetime(2026, 11, 18, 11, 6, 40, 500000, tzinfo=UTC)),
        ({"exp": True}, None),  # a boolean is not a time
        ({"exp": "1795000000"}, None),
        ({"exp": None}, None),
        ({"sub": "x"}, None),
        ([{"exp": 1795000000}], None),  # a payload that is not an object
        ({"exp": 10**20}, None),  # beyond any date
    ],
)
def test_jwt_expiry_reads_only_a_numeric_exp_of_an_object(
    payload: object, expected: datetime | None
) -> None:
    assert jwt_expiry(jwt_with_payload(payload)) == expected


@pytest.mark.parametrize("size", [10, 11, 12, 13])
def test_jwt_payloads_of_every_length_decode_without_their_padding(size: int) -> None:
    # base64url drops the '=' padding: 0, 1 or 2 characters must be put back.
    payload = {"exp": 1795000000, "s": "x" * size}
    assert jwt_expiry(jwt_with_payload(payload)) == datetime(2026, 11, 18, 11, 6, 40, tzinfo=UTC)


def test_padding_characters_inside_a_jwt_payload_are_skipped_as_base64_does() -> None:
    # The padding put back is counted from the payload's length, '=' characters included.
    part = jwt_with_payload({"exp": 1795000000}).split(".")[1]
    token = f"h.==={part}.s"
    assert jwt_expiry(token) == datetime(2026, 11, 18, 11, 6, 40, tzinfo=UTC)


def test_a_lower_case_z_is_utc_too() -> None:
    assert parse_timestamp("2026-11-22T12:00:00z") == NOW
    assert parse_timestamp(" 2026-11-22T12:00:00Z ") == NOW
    assert parse_timestamp("") is None


@pytest.fixture
def host_in_india(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The machine's local time zone is UTC+05:30 for the test (restored after)."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("host_in_india")
def test_times_are_utc_whatever_the_hosts_time_zone() -> None:
    result = inspect(chatgpt_auth(NOW, access_exp_days=2, last_refresh_days=3))
    assert result["access_token_expires_at"] == "2026-11-24T12:00:00Z"
    assert result["last_refresh"] == "2026-11-19T12:00:00Z"
    # The last hour of year 9999 in UTC is a time, though not in local time east of Greenwich.
    raw = json.dumps(api_key_auth() | {"last_refresh": "9999-12-31T23:00:00Z"}).encode()
    inspection = inspect_auth_json(raw, NOW)
    assert (inspection.problems, inspection.last_refresh) == ((), "9999-12-31T23:00:00Z")


@pytest.mark.parametrize(
    ("data", "mode", "problems"),
    [
        # A key and tokens, nothing declared: the tokens (a ChatGPT login) decide.
        (chatgpt_auth(NOW) | api_key_auth(), "chatgpt", []),
        # Tokens that are not an object are no ChatGPT login: the key decides.
        (api_key_auth() | {"tokens": []}, "api_key", ["'tokens' is not an object"]),
        (api_key_auth() | {"tokens": "x"}, "api_key", ["'tokens' is not an object"]),
        # An empty token is a missing one.
        (
            {"tokens": {"access_token": "a", "refresh_token": ""}},
            "chatgpt",
            ["ChatGPT login is missing refresh_token"],
        ),
        (
            {"tokens": {"id_token": "i"}},
            "chatgpt",
            ["ChatGPT login is missing access_token and refresh_token"],
        ),
        # A declared mode that is not text is no declaration.
        ({"auth_mode": 5} | api_key_auth(), "api_key", []),
        (
            {"auth_mode": "agentIdentity", "agent_identity": ""},
            "access_token",
            ["agent_identity is neither a token nor a record"],
        ),
        (
            {"auth_mode": "personalAccessToken", "personal_access_token": 7},
            "access_token",
            ["personal_access_token is not a token"],
        ),
    ],
)
def test_which_login_a_file_holds_and_its_exact_problems(
    data: dict[str, Any], mode: str, problems: list[str]
) -> None:
    result = inspect(data)
    assert (result["auth_mode"], result["problems"]) == (mode, problems)


def test_leftover_access_token_fields_do_not_change_a_chatgpt_logins_expiry() -> None:
    data = chatgpt_auth(NOW, access_exp_days=2) | {
        "auth_mode": "chatgpt",
        "agent_identity": fake_jwt(NOW + timedelta(hours=1), "SECRET-AGENT-IDENTITY-ab12"),
    }
    result = inspect(data)
    assert (result["auth_mode"], result["access_token_kind"]) == ("chatgpt", None)
    assert result["access_token_expires_at"] == "2026-11-24T12:00:00Z"
    # An API key login has no access-token kind either.
    assert inspect(api_key_auth())["access_token_kind"] is None
