"""Fuzzing the auth-file surface: any bytes as auth.json, inspected and offered as a login.

``inspect_auth_json`` must never raise and never echo the file's content; ``check_login`` and
``read_login_source`` (what ``moonmind-codex login --from-file`` runs before the engine is
contacted) raise only ``LoginDataError``, whose message names the source, what is wrong and the
fix. Profiles and longer runs: see ``tests/unit/fuzz_profiles.py``.
"""

from __future__ import annotations

import io
import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from moonmind_codex.core.authfile import TOKEN_FIELDS, inspect_auth_json, parse_timestamp
from moonmind_codex.engine.login import (
    MAX_LOGIN_BYTES,
    LoginDataError,
    check_login,
    read_login_source,
)
from moonmind_codex.settings import Settings
from tests.unit.fuzz_profiles import examples
from tests.unit.fuzz_strategies import (
    SECRET_PREFIX,
    b64,
    iso_timestamps,
    json_values,
    jwts,
    now,
    secrets,
)
from tests.unit.helpers import chatgpt_auth, fake_jwt

SETTINGS = Settings(shard_count=3, host_name="fuzz-host")
FIELDS = ("auth_mode", "OPENAI_API_KEY", "tokens", "last_refresh")


def assert_inspection_is_safe(raw: bytes) -> dict[str, Any]:
    inspection = inspect_auth_json(raw, now())
    data = inspection.to_dict()
    text = json.dumps(data)  # always serialisable: the probe prints it as JSON
    assert SECRET_PREFIX not in text
    if inspection.parse_error is not None:
        assert inspection.parse_error.startswith("auth.json ")
        assert not inspection.logged_in
    assert set(data["token_fields"]) == set(TOKEN_FIELDS)
    return data


def assert_login_check(raw: bytes) -> None:
    """Accepted exactly when the inspection says logged in; otherwise one clear LoginDataError."""
    logged_in = inspect_auth_json(raw, datetime.now(UTC)).logged_in
    try:
        check_login(SETTINGS, 1, raw, "fuzz.json")
    except LoginDataError as exc:
        message = str(exc)
        assert not logged_in
        assert message.startswith("fuzz.json ")
        assert "volume codex_auth_1 was not changed" in message
        assert SECRET_PREFIX not in message
    else:
        assert logged_in


@examples(300)
@given(st.binary(max_size=512))
def test_any_bytes_are_inspected_without_error(raw: bytes) -> None:
    assert_inspection_is_safe(raw)
    assert_login_check(raw)


@examples(200)
@given(json_values)
def test_any_json_value_is_inspected_without_error(value: Any) -> None:
    assert_inspection_is_safe(json.dumps(value).encode())


@st.composite
def auth_shaped(draw: st.DrawFn) -> dict[str, Any]:
    """Objects with the login's field names, each holding a plausible or an arbitrary value."""
    token_value = st.one_of(jwts(), secrets, json_values)
    tokens = st.one_of(
        st.dictionaries(st.sampled_from(TOKEN_FIELDS), token_value, max_size=4),
        json_values,
    )
    values = {
        "auth_mode": st.one_of(st.sampled_from(["chatgpt", "apikey", "API_KEY"]), secrets),
        "OPENAI_API_KEY": st.one_of(secrets, json_values),
        "tokens": tokens,
        "last_refresh": iso_timestamps,
    }
    chosen = draw(st.sets(st.sampled_from(FIELDS)))
    data = {name: draw(values[name]) for name in sorted(chosen)}
    data.update(draw(st.dictionaries(secrets, json_values, max_size=2)))
    return data


@examples(300)
@given(auth_shaped())
def test_login_shaped_objects_never_leak_a_secret(data: dict[str, Any]) -> None:
    raw = json.dumps(data).encode()
    inspected = assert_inspection_is_safe(raw)
    assert inspected["declared_auth_mode"] in (None, "chatgpt", "apikey", "API_KEY", "other")
    assert_login_check(raw)


@examples(200)
@given(iso_timestamps)
def test_any_last_refresh_is_a_time_or_a_problem(stamp: str) -> None:
    raw = json.dumps({"OPENAI_API_KEY": "sk-x", "last_refresh": stamp}).encode()
    inspected = assert_inspection_is_safe(raw)
    if parse_timestamp(stamp) is None:
        assert inspected["problems"] == ["last_refresh is not an ISO 8601 timestamp"]
    else:
        assert inspected["problems"] == [] and inspected["logged_in"]


@examples(100)
@given(
    st.floats(min_value=-3650, max_value=3650),
    st.floats(min_value=0, max_value=3650),
)
def test_good_chatgpt_logins_are_accepted(access_days: float, refresh_days: float) -> None:
    raw = json.dumps(
        chatgpt_auth(now(), access_exp_days=access_days, last_refresh_days=refresh_days)
    ).encode()
    inspected = assert_inspection_is_safe(raw)
    assert inspected["logged_in"] and inspected["auth_mode"] == "chatgpt"
    expiry = now() + timedelta(days=access_days)
    assert inspected["access_token_expired"] == (int(expiry.timestamp()) <= now().timestamp())


@examples(100)
@given(st.integers(min_value=-(2**64), max_value=2**64) | st.floats())
def test_any_jwt_expiry_is_a_time_or_none(exp: Any) -> None:
    token = fake_jwt(now(), "S3CRET-marker").split(".")
    payload = json.dumps({"exp": exp}).encode()
    tokens = {"access_token": f"{token[0]}.{b64(payload)}.{token[2]}", "refresh_token": "r"}
    assert_inspection_is_safe(json.dumps({"tokens": tokens}).encode())


@examples(100)
@given(st.binary(max_size=256))
def test_a_login_read_from_a_stream_or_a_file_is_checked(raw: bytes) -> None:
    assert read_login_source(io.BytesIO(raw), "standard input") == raw
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory, "auth.json")
        path.write_bytes(raw)
        assert read_login_source(path, str(path)) == raw
    assert_login_check(raw)


@examples(100)
@given(st.text(max_size=60))
def test_any_path_is_read_or_refused_with_a_clear_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        # Every name lands in an empty directory: a refusal, or a file or directory made here.
        path = Path(directory, "f" + text)
        try:
            raw = read_login_source(path, "AUTH_JSON")
        except LoginDataError as exc:
            assert str(exc).startswith("cannot read AUTH_JSON: ")
            assert "nothing was changed" in str(exc)
        else:
            assert len(raw) <= MAX_LOGIN_BYTES


@st.composite
def access_token_shaped(draw: st.DrawFn) -> dict[str, Any]:
    """What `codex login --with-access-token` writes, with any value in its fields."""
    data: dict[str, Any] = {"OPENAI_API_KEY": None}
    data["auth_mode"] = draw(
        st.one_of(st.sampled_from(["agentIdentity", "personalAccessToken", None]), secrets)
    )
    field = draw(st.sampled_from(["agent_identity", "personal_access_token"]))
    data[field] = draw(st.one_of(secrets, jwts(), json_values, st.just({"key": SECRET_PREFIX})))
    return data


@examples(300)
@given(access_token_shaped())
def test_access_token_shaped_objects_never_leak_a_token(data: dict[str, Any]) -> None:
    raw = json.dumps(data).encode()
    inspected = assert_inspection_is_safe(raw)
    assert inspected["auth_mode"] in ("access_token", "unknown")
    if inspected["auth_mode"] == "access_token":
        assert inspected["logged_in"] == (inspected["problems"] == [])
        assert inspected["token_fields"]["refresh_token"] is False
    assert_login_check(raw)
