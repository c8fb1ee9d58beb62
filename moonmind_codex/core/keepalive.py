"""When an idle shard's login gets a keep-alive (pure: no I/O, standard library only).

The Codex CLI refreshes a ChatGPT login (and so rotates its refresh token) only when it runs:
when the access token is about to expire, or when ``last_refresh`` in ``auth.json`` is older
than about 8 days. A shard that runs nothing for long enough lets its login die. Each shard's
worker therefore asks :func:`decide`, every few minutes, whether its login is due for a
keep-alive (a minimal ``codex exec``), which then goes through the shard's own queue like any
run (``moonmind_codex.worker.keepalive_scheduler``):
recorded, pre-flighted, one job at a time on the
volume.

Due when, in this order of refusals:

- the shard is not quarantined (the server rejected the login: a keep-alive would only fail
  again, the runbook says sign in);
- no keep-alive of this shard is open (pending or running; one older than ``retry_after`` is
  taken as lost);
- no phase is running on the shard, and none started, ended or was queued for ``idle_after``;
- the last keep-alive is older than ``retry_after`` (one that did not make the CLI refresh, or
  failed transiently, is not repeated sooner);
- the login is a ChatGPT one (an API key or an access token has no refresh token to keep
  alive), and its ``last_refresh`` is older than ``refresh_after`` plus this shard's stagger
  offset (shard ``n`` of ``N`` waits ``stagger * n / N`` longer, so shards signed in together do
  not all fire together). A login without ``last_refresh`` is due; one dated in the future (a
  clock is wrong) is not: the CLI would not refresh it either.

Once the login is read, a login that is a fenced copy of another shard's (the same auth.json
the fence judged) gets none: its pre-flight would block, and a refresh would revoke the login
of the shard that owns it. A new sign-in (another auth.json) is due again by the rules above.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

KEEPALIVE_PHASE = "keepalive"
RUN_ID_PREFIX = "keepalive-"
# A last_refresh this far ahead of this clock is jitter, not a wrong clock (as the pre-flight).
CLOCK_SKEW = timedelta(minutes=10)
# Only these logins have a refresh token the CLI rotates.
REFRESHING_MODES = frozenset({"chatgpt"})


@dataclass(frozen=True)
class KeepalivePolicy:
    """The thresholds (``MOONMIND_CODEX_KEEPALIVE_*`` settings)."""

    refresh_after: timedelta
    idle_after: timedelta
    retry_after: timedelta
    stagger: timedelta
    # A phase recorded running for longer than this (plus idle_after) is a stale record.
    job_timeout: timedelta


@dataclass(frozen=True)
class ShardActivity:
    """What the run store says about the shard (aware UTC datetimes, None: never)."""

    # The latest creation of a run, or start or end of a phase attempt, on the shard's queue.
    last_activity: datetime | None = None
    # The latest start of an attempt still recorded running on the shard.
    running_since: datetime | None = None
    # When this shard's latest keep-alive was created, if it is still pending or running.
    keepalive_open_since: datetime | None = None
    # When this shard's latest keep-alive was created.
    last_keepalive_at: datetime | None = None
    quarantined: bool = False
    # The auth.json digest of a login fenced on this shard (a later copy of another shard's).
    fenced_auth_digest: str | None = None


@dataclass(frozen=True)
class LoginState:
    """The login's metadata as the probe reads it (never a token)."""

    auth_mode: str | None
    last_refresh: datetime | None
    # SHA-256 of auth.json's bytes (which login it is, not the login).
    auth_digest: str | None = None


@dataclass(frozen=True)
class Decision:
    due: bool
    reason: str
    # The shard is free: the login must be read to decide.
    needs_login: bool = False
    # When a login read now should be read again (None: after the next phase on the shard).
    recheck_at: datetime | None = None


def run_id_prefix(shard: int) -> str:
    """Every keep-alive run of ``shard`` has an id starting with this."""
    return f"{RUN_ID_PREFIX}{shard}-"


def keepalive_run_id(shard: int, now: datetime) -> str:
    """``keepalive-<shard>-<UTC timestamp>``: a valid run id, sorting by time."""
    return run_id_prefix(shard) + now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def stagger_offset(shard: int, shard_count: int, stagger: timedelta) -> timedelta:
    """How much later than the horizon shard ``shard`` fires: ``stagger * shard / count``."""
    return stagger * (shard % shard_count) / shard_count


def first_check_delay(shard: int, shard_count: int, interval_s: float) -> float:
    """Seconds before a worker's first check: shards started together check apart."""
    return interval_s * (shard % shard_count) / shard_count


def _ago(now: datetime, moment: datetime) -> str:
    return f"{(now - moment).total_seconds() / 86400:.2f} days ago"


def _at(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def shard_refusal(now: datetime, activity: ShardActivity, policy: KeepalivePolicy) -> str | None:
    """Why the shard cannot take a keep-alive now (None: it is free and idle)."""
    if activity.quarantined:
        return "the shard is quarantined (the server rejected its login): sign in again"
    open_since = activity.keepalive_open_since
    if open_since is not None and now - open_since < policy.retry_after:
        return f"a keep-alive of this shard is still open (sent {_at(open_since)})"
    running = activity.running_since
    if running is not None and now - running < policy.job_timeout + policy.idle_after:
        return f"a phase is running on the shard (since {_at(running)})"
    last = activity.last_activity
    if last is not None and now - last < policy.idle_after:
        return f"the shard is not idle (last phase activity {_at(last)})"
    previous = activity.last_keepalive_at
    if previous is not None and now - previous < policy.retry_after:
        return (
            f"the last keep-alive was sent {_at(previous)}; the next not before "
            f"{_at(previous + policy.retry_after)}"
        )
    return None


def decide(  # noqa: PLR0911 - one return per reason, in the order the docstring gives
    now: datetime,
    shard: int,
    shard_count: int,
    activity: ShardActivity,
    login: LoginState | None,
    policy: KeepalivePolicy,
) -> Decision:
    """Whether shard ``shard`` gets a keep-alive at ``now``; ``login`` None: not read yet."""
    refusal = shard_refusal(now, activity, policy)
    if refusal is not None:
        return Decision(False, refusal)
    if login is None:
        return Decision(False, "the shard is idle: read its login", needs_login=True)
    fenced = activity.fenced_auth_digest
    if fenced is not None and login.auth_digest == fenced:
        # The gate would block it; and were it let through, its refresh would revoke the login
        # of the shard that owns the original.
        return Decision(
            False,
            "the login is a fenced copy of another shard's: sign this shard in with its own "
            "login, or resolve the fence (moonmind-codex login-fence)",
            recheck_at=now + policy.retry_after,
        )
    if login.auth_mode not in REFRESHING_MODES:
        return Decision(
            False,
            f"the login ({login.auth_mode or 'none'}) has no refresh token to keep alive",
            recheck_at=now + policy.retry_after,
        )
    refreshed = login.last_refresh
    if refreshed is None:
        return Decision(True, "the login has no last_refresh")
    if refreshed - now > CLOCK_SKEW:
        return Decision(
            False,
            f"last_refresh {_at(refreshed)} is in the future: check the clock",
            recheck_at=now + policy.retry_after,
        )
    due_at = refreshed + policy.refresh_after + stagger_offset(shard, shard_count, policy.stagger)
    if now < due_at:
        return Decision(
            False,
            f"the login was refreshed {_ago(now, refreshed)}; keep-alive due {_at(due_at)}",
            recheck_at=due_at,
        )
    return Decision(True, f"the shard is idle and its login was refreshed {_ago(now, refreshed)}")


def login_read_needed(
    now: datetime,
    activity: ShardActivity,
    read_at_activity: datetime | None,
    recheck_at: datetime | None,
) -> bool:
    """Whether to read the login again, given what an earlier read said.

    A login changes when a phase runs (the CLI refreshes) or when an operator imports one: the
    earlier read stands while no phase ran since and its ``recheck_at`` has not come (the
    keep-alive reads the login again before it is sent, so an import is seen then).
    """
    if recheck_at is None or read_at_activity != activity.last_activity:
        return True
    return now >= recheck_at
