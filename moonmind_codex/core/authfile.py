"""Inspect a Codex CLI ``auth.json`` without ever keeping a secret.

Pure and standard-library only: this module also runs inside the job image (the pre-flight
probe). The inspection records which fields are present, the auth mode, token expiry and the age
of ``last_refresh``; it never stores a token, key or account id, and parse errors give a
position, never the file's content.

Three kinds of login, as the Codex CLI 0.169 writes them (``auth_mode`` here):
- ``chatgpt``: ``tokens`` with an access and a refresh token (device code or browser sign-in);
  the CLI refreshes it.
- ``api_key``: ``OPENAI_API_KEY``.
- ``access_token``: ``codex login --with-access-token``. An enterprise Agent Identity JWT is kept
  as ``{"auth_mode": "agentIdentity", "agent_identity": JWT}``, a personal access token (``at-``)
  as ``{"personal_access_token": ...}``. Neither has a refresh token: when it expires, only a
  new sign-in helps. The expiry is the JWT's ``exp``; a personal access token shows none.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

AuthMode = Literal["chatgpt", "api_key", "access_token", "unknown"]
AccessTokenKind = Literal["agent_identity", "personal_access_token"]

TOKEN_FIELDS = ("id_token", "access_token", "refresh_token", "account_id")
_API_KEY_MODES = frozenset({"apikey", "api_key"})
# How the CLI names the access-token modes (serde camelCase); compared in lower case.
_ACCESS_TOKEN_MODES = {
    "agentidentity": "agent_identity",
    "personalaccesstoken": "personal_access_token",
}
_KNOWN_MODES = _API_KEY_MODES | {"chatgpt"} | set(_ACCESS_TOKEN_MODES)


@dataclass(frozen=True)
class AuthInspection:
    """What an ``auth.json`` says, minus every secret in it."""

    parse_error: str | None
    auth_mode: AuthMode
    declared_auth_mode: str | None
    has_api_key: bool
    token_fields: dict[str, bool]
    access_token_kind: AccessTokenKind | None
    access_token_expires_at: str | None
    id_token_expires_at: str | None
    access_token_expired: bool | None
    # Hours from the inspection's "now" to the access token's expiry (negative once expired).
    access_token_remaining_hours: float | None
    last_refresh: str | None
    last_refresh_age_days: float | None
    problems: tuple[str, ...]

    @property
    def logged_in(self) -> bool:
        """True when the file holds a usable login (not merely parseable, as ``{}`` is)."""
        return self.parse_error is None and self.auth_mode != "unknown" and not self.problems

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["problems"] = list(self.problems)
        data["logged_in"] = self.logged_in
        return data


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def jwt_expiry(token: object) -> datetime | None:
    """The ``exp`` claim of a JWT's payload (no signature check), or None when absent/garbled."""
    if not isinstance(token, str) or token.count(".") != 2:
        return None
    payload_part = token.split(".")[1]
    try:
        padded = payload_part + "=" * (-len(payload_part) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError, RecursionError):
        return None
    exp = payload.get("exp") if isinstance(payload, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    try:
        return datetime.fromtimestamp(exp, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def parse_timestamp(value: object) -> datetime | None:
    """An ISO 8601 timestamp (``Z`` or offset; naive means UTC), or None when not one."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        # Years 1 and 9999 with an offset cannot be converted to UTC: not a usable time.
        moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    return moment


def _failed(error: str) -> AuthInspection:
    return AuthInspection(
        parse_error=error,
        auth_mode="unknown",
        declared_auth_mode=None,
        has_api_key=False,
        token_fields=dict.fromkeys(TOKEN_FIELDS, False),
        access_token_kind=None,
        access_token_expires_at=None,
        id_token_expires_at=None,
        access_token_expired=None,
        access_token_remaining_hours=None,
        last_refresh=None,
        last_refresh_age_days=None,
        problems=(),
    )


def _decode(raw: bytes) -> tuple[Any, str | None]:
    if not raw.strip():
        return None, "auth.json is empty"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"auth.json is not UTF-8 text (bad byte at offset {exc.start})"
    try:
        return json.loads(text), None
    except RecursionError:
        return None, "auth.json is not a Codex login (its JSON is nested too deeply)"
    except json.JSONDecodeError as exc:
        # exc.msg is the parser's description ("Expecting value"); it never quotes the input.
        where = f"line {exc.lineno} column {exc.colno}"
        return None, f"auth.json is not valid JSON ({exc.msg} at {where})"
    except ValueError:
        # A number of more than 4300 digits (int_max_str_digits): the message would quote no
        # input either, but a login never holds such a number.
        return None, "auth.json is not a Codex login (it holds a number too long to read)"


def _access_token(data: dict[str, Any], problems: list[str]) -> tuple[AccessTokenKind, Any] | None:
    """The enterprise access token ``codex login --with-access-token`` stored, if any.

    An Agent Identity is a JWT string (or, in other CLI versions, a record object); a personal
    access token is a string. Returns the kind and the stored value (never kept or shown).
    """
    identity = data.get("agent_identity")
    if identity is not None:
        if isinstance(identity, dict) or (isinstance(identity, str) and identity.strip()):
            return "agent_identity", identity
        problems.append("agent_identity is neither a token nor a record")
        return "agent_identity", None
    personal = data.get("personal_access_token")
    if personal is not None:
        if isinstance(personal, str) and personal.strip():
            return "personal_access_token", personal
        problems.append("personal_access_token is not a token")
        return "personal_access_token", None
    return None


def _decide_mode(
    declared_lower: str,
    has_api_key: bool,
    tokens: dict[str, Any] | None,
    fields: dict[str, bool],
    access: tuple[AccessTokenKind, Any] | None,
    problems: list[str],
) -> AuthMode:
    """Which login the file holds; a declared mode settles a file that holds several."""
    if has_api_key and (declared_lower in _API_KEY_MODES or (tokens is None and access is None)):
        return "api_key"
    if access is not None and (declared_lower in _ACCESS_TOKEN_MODES or tokens is None):
        # No refresh token is expected: an access-token login has no refresh chain.
        return "access_token"
    if tokens is not None:
        missing = [n for n in ("access_token", "refresh_token") if not fields[n]]
        if missing:
            problems.append("ChatGPT login is missing " + " and ".join(missing))
        return "chatgpt"
    return "unknown"


def _tokens(tokens: object, problems: list[str]) -> tuple[dict[str, Any] | None, dict[str, bool]]:
    """The ``tokens`` object (None when it is not one) and which token fields hold text."""
    fields = dict.fromkeys(TOKEN_FIELDS, False)
    if tokens is not None and not isinstance(tokens, dict):
        problems.append("'tokens' is not an object")
        return None, fields
    if isinstance(tokens, dict):
        for name in TOKEN_FIELDS:
            value = tokens.get(name)
            if value is not None and not isinstance(value, str):
                problems.append(f"tokens.{name} is not a string")
            fields[name] = isinstance(value, str) and value != ""
    return tokens, fields


def inspect_auth_json(raw: bytes, now: datetime) -> AuthInspection:
    """Inspect the bytes of an ``auth.json`` as the Codex CLI would read them."""
    data, error = _decode(raw)
    if error is not None:
        return _failed(error)
    if not isinstance(data, dict):
        return _failed(f"auth.json holds a JSON {type(data).__name__}, not an object")

    problems: list[str] = []
    declared = data.get("auth_mode")
    declared_mode = declared if isinstance(declared, str) else None

    api_key = data.get("OPENAI_API_KEY")
    has_api_key = isinstance(api_key, str) and api_key.strip() != ""
    if api_key is not None and not isinstance(api_key, str):
        problems.append("OPENAI_API_KEY is not a string")

    tokens, fields = _tokens(data.get("tokens"), problems)

    declared_lower = (declared_mode or "").lower()
    access = _access_token(data, problems)
    expected = _ACCESS_TOKEN_MODES.get(declared_lower)
    if expected is not None and (access is None or access[0] != expected):
        # The CLI refuses it too ("agent identity auth is missing an agent identity token").
        problems.append(f"auth_mode {declared_mode} but no {expected} in the file")
    mode = _decide_mode(declared_lower, has_api_key, tokens, fields, access, problems)
    access_kind: AccessTokenKind | None = None
    if mode == "access_token" and access is not None:
        access_kind = access[0]
        access_exp = jwt_expiry(access[1])
    else:
        access_exp = jwt_expiry(tokens.get("access_token")) if isinstance(tokens, dict) else None
    id_exp = jwt_expiry(tokens.get("id_token")) if isinstance(tokens, dict) else None

    raw_refresh = data.get("last_refresh")
    refreshed = parse_timestamp(raw_refresh)
    if raw_refresh is not None and refreshed is None:
        problems.append("last_refresh is not an ISO 8601 timestamp")
    age_days = (now - refreshed).total_seconds() / 86400 if refreshed is not None else None

    return AuthInspection(
        parse_error=None,
        auth_mode=mode,
        # Only a known mode name is echoed back, so an odd file cannot smuggle text out.
        declared_auth_mode=(
            None
            if declared_mode is None
            else declared_mode
            if declared_mode.lower() in _KNOWN_MODES
            else "other"
        ),
        has_api_key=has_api_key,
        token_fields=fields,
        access_token_kind=access_kind,
        access_token_expires_at=_iso(access_exp) if access_exp else None,
        id_token_expires_at=_iso(id_exp) if id_exp else None,
        access_token_expired=(access_exp <= now) if access_exp else None,
        access_token_remaining_hours=(
            round((access_exp - now).total_seconds() / 3600, 2) if access_exp else None
        ),
        last_refresh=_iso(refreshed) if refreshed else None,
        last_refresh_age_days=round(age_days, 3) if age_days is not None else None,
        problems=tuple(problems),
    )
