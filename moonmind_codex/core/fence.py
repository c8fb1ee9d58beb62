"""Copied logins fenced: which shard may keep a ChatGPT login that two volumes hold.

Pure, standard library only (the job image's pre-flight imports it). What "one login" means:
a ChatGPT sign-in is a chain of refresh tokens; the Codex CLI replaces the refresh token on
every refresh and the server accepts each token once (the second redeemer gets
``refresh_token_reused``, and the whole chain may be revoked). Two volumes holding the same
refresh token, now or ever, are copies of one login: whichever refreshes second is logged out,
and may take the other with it. Two volumes on one ChatGPT account with logins of their own
(two sign-ins) are separate chains and legal; API keys and enterprise access tokens have no
refresh chain and are not fenced.

Two steps, so the fleet's key never enters a job container:

1. :func:`login_digest` (in the job's pre-flight): SHA-256 over a domain tag, the account id
   and the refresh token: one-way, like the ``auth_digest`` the gate already reports.
2. :func:`fingerprint` (in the worker): HMAC-SHA256 of that digest under the fleet's key. Only
   this keyed value is stored in the run store, beside :func:`key_id` (which key made it).

Every fingerprint a volume presented is kept. The first volume to register a fingerprint owns
it (the store's insertion order, not a clock); an operator's ``resolve`` gives it to the
volume they name (the latest resolution wins). Any other holder is fenced: its pre-flight
blocks while its ``auth.json`` is unchanged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

DOMAIN = b"moonmind-codex login-fence v1\0"
# A key shorter than this is not a random key (e.g. `openssl rand -hex 32` gives 64).
MIN_KEY_BYTES = 32


class FenceKeyError(ValueError):
    """The fingerprint key file does not hold a usable key; the message says why."""


def login_digest(content: bytes | None) -> str | None:
    """One-way digest of a ChatGPT login's account and refresh token; None for other logins."""
    if content is None:
        return None
    try:
        data = json.loads(content)
    except ValueError:
        return None
    tokens = data.get("tokens") if isinstance(data, dict) else None
    if not isinstance(tokens, dict):
        return None
    refresh, account = tokens.get("refresh_token"), tokens.get("account_id")
    if not isinstance(refresh, str) or not refresh:
        return None
    account = account if isinstance(account, str) else ""
    digest = hashlib.sha256(DOMAIN)
    digest.update(account.encode("utf-8") + b"\0" + refresh.encode("utf-8"))
    return digest.hexdigest()


def parse_key(raw: bytes) -> bytes:
    """The key from its file's bytes (surrounding whitespace dropped)."""
    key = raw.strip()
    if len(key) < MIN_KEY_BYTES:
        raise FenceKeyError(
            f"the fingerprint key has {len(key)} bytes; it needs at least {MIN_KEY_BYTES} "
            "random ones (e.g. openssl rand -hex 32)"
        )
    return key


def fingerprint(key: bytes, digest: str) -> str:
    """The stored fingerprint of a login: the pre-flight's digest keyed with the fleet's key."""
    if len(digest) != 64:
        raise ValueError("a login digest is 64 hex digits")
    return hmac.new(key, b"fingerprint\0" + bytes.fromhex(digest), hashlib.sha256).hexdigest()


def key_id(key: bytes) -> str:
    """Names the key (16 hex digits) without revealing it: hosts with different keys differ."""
    return hmac.new(key, b"moonmind-codex key id", hashlib.sha256).hexdigest()[:16]


@dataclass(frozen=True)
class Holder:
    """One volume's registration of one fingerprint."""

    volume: str
    host: str | None
    shard: int | None
    order: int  # the store's insertion order: earlier registered, lower
    resolved_at: datetime | None = None
    auth_digest: str | None = None
    first_seen: datetime | None = None

    def text(self) -> str:
        """The one way a holder is named in a message: shard, volume and host."""
        shard = "?" if self.shard is None else str(self.shard)
        return f"shard {shard} (volume {self.volume} on host {self.host or 'unknown'})"

    def to_dict(self) -> dict[str, Any]:
        """The one way a holder is named in JSON."""
        return {"shard": self.shard, "volume": self.volume, "host": self.host}


def owner(holders: Sequence[Holder]) -> Holder:
    """Who keeps the login: the latest operator's choice, else the first to register it."""
    if not holders:
        raise ValueError("a fingerprint without holders has no owner")
    chosen = [h for h in holders if h.resolved_at is not None]
    if chosen:
        return max(chosen, key=lambda h: (h.resolved_at, -h.order))
    return min(holders, key=lambda h: h.order)


@dataclass(frozen=True)
class FenceVerdict:
    """How one volume's current login stands: ``clear`` or ``fenced`` (a later copy)."""

    volume: str
    status: str  # "clear" | "fenced"
    holder: Holder  # this volume's registration
    owner: Holder
    others: tuple[Holder, ...]  # every other volume holding the same login

    @property
    def fenced(self) -> bool:
        return self.status == "fenced"

    @property
    def shared(self) -> bool:
        """Reported: another volume holds this login too (blocked or not)."""
        return bool(self.others)


def judge(volume: str, holders: Sequence[Holder]) -> FenceVerdict:
    """The verdict for ``volume`` among every holder of its current fingerprint."""
    own = [h for h in holders if h.volume == volume]
    if len(own) != 1:
        raise ValueError(f"volume {volume} must hold the fingerprint exactly once")
    keeper = owner(holders)
    others = tuple(sorted((h for h in holders if h.volume != volume), key=lambda h: h.order))
    status = "clear" if keeper.volume == volume else "fenced"
    return FenceVerdict(volume=volume, status=status, holder=own[0], owner=keeper, others=others)


def gate_value(verdict: FenceVerdict) -> str | None:
    """What the job's pre-flight needs to block a fenced login (JSON; nothing secret)."""
    if not verdict.fenced or not verdict.holder.auth_digest:
        return None
    keeper = verdict.owner
    return json.dumps(
        {
            "auth_digest": verdict.holder.auth_digest,
            "shard": keeper.shard,
            "volume": keeper.volume,
            "host": keeper.host,
        },
        sort_keys=True,
    )


def parse_gate_value(raw: str | None) -> dict[str, Any] | None:
    """The worker's fence value, checked; None when absent or not well formed."""
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    digest = value.get("auth_digest")
    if not isinstance(digest, str) or len(digest) != 64:
        return None
    return {
        "auth_digest": digest,
        "shard": value.get("shard") if isinstance(value.get("shard"), int) else None,
        "volume": str(value.get("volume") or "unknown"),
        "host": str(value.get("host") or "unknown"),
    }
