"""Classify how a Codex phase ended: a login the server rejected, a transient failure, or other.

Pure (no I/O, standard library only). The worker reads a bounded head and tail of the phase's
log and its exit code; :func:`classify` matches the messages the real Codex CLI prints (taken
from its source, quoted in the fixtures of ``tests/unit/test_gate.py``):

- Permanent (the login is dead until a new one is imported): the refresh-token failures the CLI
  classifies as permanent in ``codex-rs/login/src/auth/manager.rs``
  (``classify_refresh_token_failure``: ``refresh_token_expired``, ``refresh_token_reused``,
  ``refresh_token_invalidated``, and any other refresh answered 401), the account-mismatch
  failure of its 401 recovery, and an API request answered ``401 Unauthorized``
  (``UnexpectedResponseError``'s "unexpected status 401 Unauthorized: ..." in
  ``codex-rs/protocol/src/error.rs``).
- Transient (retrying later can work; the login is fine): 429 / usage limits, 5xx and "high
  demand", a dropped stream or connection, "Reconnecting...".

Only a phase that did not succeed is classified (a run that recovered is ``ok``), and a login
rejection outranks a transient line printed before it (the CLI retries, then gives up). The
returned reason is always one of the fixed tokens below, never text from the output: the output
can hold a key or a token (a 401 body echoes part of an API key).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

HealthKind = Literal["ok", "auth_rejected", "transient", "other"]

# How much of a phase's output is read: the CLI's fatal error is among its last lines, and a
# command that runs the CLI first and then goes on printing keeps it near the start.
HEAD_BYTES = 16 * 1024
TAIL_BYTES = 64 * 1024
# Lines longer than this are cut before matching (no quadratic surprises on a huge line).
MAX_LINE = 4096

# Reason tokens (stored in the run store and shown to operators): names, not credentials.
REFRESH_TOKEN_EXPIRED = "refresh_token_expired"  # noqa: S105
REFRESH_TOKEN_REUSED = "refresh_token_reused"  # noqa: S105
REFRESH_TOKEN_INVALIDATED = "refresh_token_invalidated"  # noqa: S105
# A refresh answered 401 without one of the codes above.
REFRESH_TOKEN_REJECTED = "refresh_token_rejected"  # noqa: S105
ACCOUNT_CHANGED = "account_changed"
UNAUTHORIZED = "401 unauthorized"
RATE_LIMITED = "429 rate limited"
USAGE_LIMIT = "usage limit"
SERVER_ERROR = "5xx server error"
NETWORK = "network"

AUTH_REASONS = frozenset(
    {
        REFRESH_TOKEN_EXPIRED,
        REFRESH_TOKEN_REUSED,
        REFRESH_TOKEN_INVALIDATED,
        REFRESH_TOKEN_REJECTED,
        ACCOUNT_CHANGED,
        UNAUTHORIZED,
    }
)

TRANSIENT_REASONS = frozenset({RATE_LIMITED, USAGE_LIMIT, SERVER_ERROR, NETWORK})


@dataclass(frozen=True)
class Classification:
    kind: HealthKind
    reason: str | None = None

    @property
    def rejected(self) -> bool:
        return self.kind == "auth_rejected"


def _rule(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


# Most specific first: the first rule that matches any line names the reason.
_AUTH_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    # The CLI's own sentences (REFRESH_TOKEN_*_MESSAGE in manager.rs).
    (_rule(r"refresh token has expired"), REFRESH_TOKEN_EXPIRED),
    (_rule(r"refresh token was already used"), REFRESH_TOKEN_REUSED),
    (_rule(r"refresh token was revoked"), REFRESH_TOKEN_INVALIDATED),
    # The server's codes, in a logged body ("Failed to refresh token: 401 ...: {body}") or JSON.
    (_rule(r"\brefresh_token_expired\b"), REFRESH_TOKEN_EXPIRED),
    (_rule(r"\brefresh_token_reused\b"), REFRESH_TOKEN_REUSED),
    (_rule(r"\brefresh_token_invalidated\b"), REFRESH_TOKEN_INVALIDATED),
    # The server's sentence for a reused token, as older CLIs printed it.
    (_rule(r"refresh token has already been used"), REFRESH_TOKEN_REUSED),
    (_rule(r"could not be refreshed because you have since logged out"), ACCOUNT_CHANGED),
    # REFRESH_TOKEN_UNKNOWN_MESSAGE: a refresh answered 401 with no known code.
    (
        _rule(r"access token could not be refreshed\. please log out and sign in"),
        REFRESH_TOKEN_REJECTED,
    ),
    (_rule(r"failed to refresh token: 401\b"), REFRESH_TOKEN_REJECTED),
    (_rule(r"unexpected status 401\b"), UNAUTHORIZED),
)

_TRANSIENT_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (_rule(r"\b429 too many requests\b|last status: 429\b|unexpected status 429\b"), RATE_LIMITED),
    (_rule(r"you've hit your usage limit|rate limit (reached|exceeded)"), USAGE_LIMIT),
    (
        _rule(
            r"(unexpected status|last status:|failed to refresh token:) 5\d\d\b"
            r"|experiencing high demand|model is at capacity"
        ),
        SERVER_ERROR,
    ),
    (
        _rule(
            r"stream disconnected before completion|connection failed:"
            r"|error while reading the server response"
            # 0.169 prints its retries as "ERROR: Reconnecting... 2/5", and without DNS
            # "ERROR: Reconnecting... waiting for network" until it is stopped.
            r"|^\s*(error:\s*)?reconnecting\.\.\. (\d+/\d+|waiting for network)"
            r"|failed to lookup address information"
            r"|request timed out|error sending request for url"
        ),
        NETWORK,
    ),
)

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def _lines(output: str) -> list[str]:
    if len(output) > HEAD_BYTES + TAIL_BYTES:
        output = output[:HEAD_BYTES] + "\n" + output[-TAIL_BYTES:]
    return [_ANSI.sub("", line)[:MAX_LINE] for line in output.splitlines()]


def _first(lines: list[str], rules: tuple[tuple[re.Pattern[str], str], ...]) -> str | None:
    for pattern, reason in rules:
        if any(pattern.search(line) for line in lines):
            return reason
    return None


def classify(output: str, exit_code: int | None) -> Classification:
    """How a phase that printed ``output`` and ended with ``exit_code`` went.

    ``exit_code`` None is a job stopped from outside (its timeout): its output is still read.
    """
    if exit_code == 0:
        return Classification("ok")
    lines = _lines(output)
    reason = _first(lines, _AUTH_RULES)
    if reason is not None:
        return Classification("auth_rejected", reason)
    reason = _first(lines, _TRANSIENT_RULES)
    if reason is not None:
        return Classification("transient", reason)
    return Classification("other")
