"""Copied logins fenced: the pure rules (digest, keyed fingerprint, owner, verdict, gate value)."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from moonmind_codex.core import fence
from moonmind_codex.core.preflight_eval import LoginPolicy, check_fence, copied_login, evaluate
from moonmind_codex.core.shard import Shard
from moonmind_codex.gate.check import FENCE_ENV, FENCED_ENV, check
from tests.unit.helpers import SECRET_MARKERS, api_key_auth, chatgpt_auth

KEY = b"k" * 32
T0 = datetime(2026, 11, 27, tzinfo=UTC)


def login(refresh: str = "R1", account: str | None = "acct") -> bytes:
    tokens: dict[str, object] = {"refresh_token": refresh}
    if account is not None:
        tokens["account_id"] = account
    return json.dumps({"auth_mode": "chatgpt", "tokens": tokens}).encode()


def test_the_digest_covers_account_and_refresh_token_under_a_domain_tag() -> None:
    expected = hashlib.sha256(b"moonmind-codex login-fence v1\0acct\0R1").hexdigest()
    assert fence.login_digest(login()) == expected
    assert fence.login_digest(login("R2")) != expected
    assert fence.login_digest(login(account="other")) != expected
    # The separator: ("ab", "c") and ("a", "bc") differ.
    assert fence.login_digest(login("c", "ab")) != fence.login_digest(login("bc", "a"))
    # No account id: the empty one.
    assert (
        fence.login_digest(login(account=None))
        == hashlib.sha256(b"moonmind-codex login-fence v1\0\0R1").hexdigest()
    )
    assert fence.login_digest(
        json.dumps({"tokens": {"refresh_token": "R1", "account_id": 5}}).encode()
    ) == (fence.login_digest(login(account=None)))


@pytest.mark.parametrize(
    "content",
    [
        None,
        b"not json",
        b"[1]",
        json.dumps(api_key_auth()).encode(),
        json.dumps({"tokens": "x"}).encode(),
        json.dumps({"tokens": {"refresh_token": ""}}).encode(),
        json.dumps({"tokens": {"refresh_token": 7}}).encode(),
    ],
)
def test_logins_without_a_refresh_chain_have_no_digest(content: bytes | None) -> None:
    assert fence.login_digest(content) is None


def test_the_digest_never_holds_the_token() -> None:
    raw = json.dumps(chatgpt_auth()).encode()
    digest = fence.login_digest(raw)
    assert digest is not None and len(digest) == 64
    assert not any(marker in digest for marker in SECRET_MARKERS)


def test_the_fingerprint_is_an_hmac_of_the_digest_under_the_key() -> None:
    digest = "ab" * 32
    expected = hmac.new(KEY, b"fingerprint\0" + bytes.fromhex(digest), hashlib.sha256).hexdigest()
    assert fence.fingerprint(KEY, digest) == expected
    assert fence.fingerprint(b"j" * 32, digest) != expected
    with pytest.raises(ValueError, match="64 hex"):
        fence.fingerprint(KEY, "ab" * 31)


def test_the_key_id_names_the_key_without_revealing_it() -> None:
    expected = hmac.new(KEY, b"moonmind-codex key id", hashlib.sha256).hexdigest()[:16]
    assert fence.key_id(KEY) == expected
    assert fence.key_id(b"j" * 32) != expected


def test_a_key_needs_32_bytes_after_whitespace() -> None:
    assert fence.parse_key(b"  " + KEY + b"\n") == KEY
    with pytest.raises(fence.FenceKeyError, match="31 bytes; it needs at least 32"):
        fence.parse_key(b"k" * 31 + b"\n")


def holder(volume: str, order: int, **fields: object) -> fence.Holder:
    return fence.Holder(volume=volume, host=f"host-{volume}", shard=order, order=order, **fields)  # type: ignore[arg-type]


def test_the_first_to_register_owns_the_login_and_later_holders_are_fenced() -> None:
    first, second, third = holder("a", 1), holder("b", 2), holder("c", 3)
    assert fence.owner([third, first, second]) == first
    mine = fence.judge("a", [second, first])
    assert (mine.status, mine.fenced, mine.shared, mine.owner) == ("clear", False, True, first)
    assert mine.others == (second,)
    later = fence.judge("c", [third, second, first])
    assert (later.status, later.fenced, later.owner, later.holder) == ("fenced", True, first, third)
    assert later.others == (first, second)
    alone = fence.judge("a", [first])
    assert (alone.status, alone.shared, alone.others) == ("clear", False, ())


def test_an_operators_latest_resolution_wins() -> None:
    first = holder("a", 1, resolved_at=T0)
    second = holder("b", 2, resolved_at=T0 + timedelta(hours=1))
    third = holder("c", 3)
    assert fence.owner([first, second, third]) == second
    assert fence.owner([first, third]) == first
    # Equal times: the earlier registration.
    assert (
        fence.owner([holder("b", 2, resolved_at=T0), holder("a", 1, resolved_at=T0)]).volume == "a"
    )
    assert fence.judge("a", [first, second]).fenced


def test_judging_needs_the_volume_once_and_holders() -> None:
    with pytest.raises(ValueError, match="exactly once"):
        fence.judge("x", [holder("a", 1)])
    with pytest.raises(ValueError, match="exactly once"):
        fence.judge("a", [holder("a", 1), holder("a", 2)])
    with pytest.raises(ValueError, match="no owner"):
        fence.owner([])


def test_the_gate_value_carries_the_copys_digest_and_the_owner_only_when_fenced() -> None:
    digest = "d" * 64
    first, copy = holder("a", 1), holder("b", 2, auth_digest=digest)
    value = fence.gate_value(fence.judge("b", [first, copy]))
    assert value is not None
    assert json.loads(value) == {"auth_digest": digest, "shard": 1, "volume": "a", "host": "host-a"}
    assert fence.parse_gate_value(value) == json.loads(value)
    assert fence.gate_value(fence.judge("a", [first, copy])) is None
    no_digest = holder("b", 2)
    assert fence.gate_value(fence.judge("b", [first, no_digest])) is None


@pytest.mark.parametrize(
    "raw",
    [None, "", "{", "[1]", json.dumps({"auth_digest": "d" * 63}), json.dumps({"auth_digest": 5})],
)
def test_a_bad_gate_value_is_ignored(raw: str | None) -> None:
    assert fence.parse_gate_value(raw) is None


def test_a_gate_value_with_odd_fields_is_made_safe() -> None:
    parsed = fence.parse_gate_value(json.dumps({"auth_digest": "d" * 64, "shard": "2"}))
    assert parsed == {
        "auth_digest": "d" * 64,
        "shard": None,
        "volume": "unknown",
        "host": "unknown",
    }


SHARD = Shard(number=3, queue="codex-3", volume="codex_auth_3", host="worker-b")


def fenced_report(digest: str, fenced_digest: str) -> dict[str, object]:
    return {
        "auth_digest": digest,
        "fence": {
            "auth_digest": fenced_digest,
            "shard": 1,
            "volume": "codex_auth_1",
            "host": "worker-a",
        },
    }


def test_the_pre_flight_blocks_a_fenced_copy_while_auth_json_is_unchanged() -> None:
    report = fenced_report("e" * 64, "e" * 64)
    assert copied_login(report) == "shard 1 (volume codex_auth_1 on host worker-a)"
    (finding,) = check_fence(report)
    assert finding.status == "blocked" and finding.name == "copied login"
    assert "same ChatGPT login as shard 1 (volume codex_auth_1 on host worker-a)" in finding.detail
    # Another login imported since: the worker judges it afresh.
    assert check_fence(fenced_report("f" * 64, "e" * 64)) == []
    assert check_fence({"auth_digest": "e" * 64}) == []
    assert check_fence({"fence": {"auth_digest": "e" * 64}}) == []


def test_a_fenced_verdict_names_the_other_shard_and_both_fixes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    auth = home / "auth.json"
    auth.write_text(json.dumps(chatgpt_auth()))
    auth.chmod(0o600)
    env = {FENCE_ENV: "1"}
    report, _ = check(env, home, datetime.now(UTC))  # no Codex CLI here: only the digest counts
    assert report["login_digest"] == fence.login_digest(auth.read_bytes())
    assert "fence" not in report
    blocked_value = json.dumps(
        {
            "auth_digest": report["auth_digest"],
            "shard": 1,
            "volume": "codex_auth_1",
            "host": "worker-a",
        }
    )
    report, go_on = check({FENCED_ENV: blocked_value}, home, datetime.now(UTC))
    assert not go_on and report["gate"] == "blocked"
    assert "login_digest" not in report  # not asked for
    result = evaluate(report, SHARD, LoginPolicy(job_uid=report["uid"], warn_after_days=7), 0.1)
    assert result.blocked and result.findings[0].name == "copied login"
    assert result.remediation is not None
    assert (
        "on host worker-b, sign volume codex_auth_3 in with a login of its own"
        in result.remediation
    )
    assert "moonmind-codex login --shard 3" in result.remediation
    assert "moonmind-codex login-fence resolve --shard 3" in result.remediation
    assert "shard 1 (volume codex_auth_1 on host worker-a)" in result.remediation
