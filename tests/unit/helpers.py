"""Fabricated Codex logins for tests (fake JWTs; nothing here is a real credential)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

SECRET_MARKERS = (
    "SECRET-ACCESS-f00d",
    "SECRET-REFRESH-beef",
    "SECRET-ACCOUNT-cafe",
    "SECRET-ID-dead",
    "sk-SECRET-KEY-1234",
    "SECRET-AGENT-IDENTITY-ab12",
    "at-SECRET-PAT-5678",
)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def fake_jwt(exp: datetime, marker: str) -> str:
    return f"{_b64({'alg': 'RS256'})}.{_b64({'exp': int(exp.timestamp()), 'sub': marker})}.{marker}"


def chatgpt_auth(
    now: datetime | None = None, *, access_exp_days: float = 1, last_refresh_days: float = 1
) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    return {
        "auth_mode": "chatgpt",
        "OPENAI_API_KEY": None,
        "tokens": {
            "id_token": fake_jwt(now + timedelta(days=access_exp_days), SECRET_MARKERS[3]),
            "access_token": fake_jwt(now + timedelta(days=access_exp_days), SECRET_MARKERS[0]),
            "refresh_token": SECRET_MARKERS[1],
            "account_id": SECRET_MARKERS[2],
        },
        "last_refresh": (now - timedelta(days=last_refresh_days)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def api_key_auth() -> dict[str, Any]:
    return {"OPENAI_API_KEY": SECRET_MARKERS[4]}


def agent_identity_auth(now: datetime | None = None, *, exp_hours: float = 48) -> dict[str, Any]:
    """What `codex login --with-access-token` writes for an enterprise Agent Identity JWT."""
    now = now or datetime.now(UTC)
    token = fake_jwt(now + timedelta(hours=exp_hours), SECRET_MARKERS[5])
    return {"auth_mode": "agentIdentity", "OPENAI_API_KEY": None, "agent_identity": token}


def personal_access_token_auth() -> dict[str, Any]:
    """What `codex login --with-access-token` writes for a personal access token (``at-``)."""
    return {"OPENAI_API_KEY": None, "personal_access_token": SECRET_MARKERS[6]}


def assert_no_secret(text: str) -> None:
    for marker in SECRET_MARKERS:
        assert marker not in text, f"secret marker {marker} leaked"
