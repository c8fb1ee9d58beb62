"""Judge a pre-flight probe report: ok, warn or blocked, with the reason and the exact fix.

Pure: takes the probe's JSON (see docs/internals.md) and returns a :class:`PreflightResult`.
One small function per concern (directory, auth file, freshness, the CLI's own status) returns
:class:`Finding` values that carry the *kind* of fix; :func:`verdict` picks the worst finding
and renders its fix once, through :mod:`moonmind_codex.core.messages`. Running the probe
container is :mod:`moonmind_codex.engine.preflight`'s job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Literal

from moonmind_codex.core import messages
from moonmind_codex.core.messages import Fix
from moonmind_codex.core.probe_report import STATUS_UNVERIFIED
from moonmind_codex.core.shard import Shard

Status = Literal["ok", "warn", "blocked"]
FindingStatus = Literal["ok", "info", "warn", "blocked"]
_SEVERITY: dict[FindingStatus, int] = {"ok": 0, "info": 0, "warn": 1, "blocked": 2}
# A last_refresh this far ahead of the checking clock is not clock jitter: the file or a clock
# is wrong, and the login's age (hence the CLI's refresh schedule) cannot be judged.
FUTURE_TOLERANCE_DAYS = 10 / (24 * 60)
# An access-token login (no refresh chain) warns when its token expires within this many hours.
ACCESS_TOKEN_WARN_HOURS = 24.0
# What `codex login status` says offline for an access-token login, which it checks online (the
# probe has no network); probe._KNOWN_STATUS reduces the CLI's error to this phrase.
UNVERIFIED_OFFLINE = STATUS_UNVERIFIED


@dataclass(frozen=True)
class Finding:
    """What one check of the pre-flight found, and which kind of fix it calls for."""

    name: str
    status: FindingStatus
    detail: str
    fix: Fix | None = None


@dataclass(frozen=True)
class LoginPolicy:
    """What the judge needs from the settings."""

    job_uid: int
    warn_after_days: float


@dataclass(frozen=True)
class PreflightResult:
    status: Status
    reason: str
    shard: Shard
    remediation: str | None
    duration_s: float
    findings: tuple[Finding, ...] = ()
    auth_mode: str | None = None
    checked_at: str = field(
        default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    )

    @property
    def blocked(self) -> bool:
        return self.status == "blocked"

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON: ``shard`` is the number, beside ``queue``, ``volume`` and ``host``."""
        own = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "shard"}
        own["findings"] = [
            {**asdict(f), "fix": f.fix.value if f.fix else None} for f in self.findings
        ]
        return {**own, **self.shard.as_fields()}

    def message(self) -> str:
        head = f"Codex login check {self.status.upper()} for {self.shard}: {self.reason}"
        if self.status != "ok" and self.auth_mode in ("chatgpt", "api_key", "access_token"):
            # An ok reason names the sign-in mode; a problem's reason may not.
            head += f" (auth mode {self.auth_mode})"
        if self.remediation:
            return f"{head}\nFix: {self.remediation}"
        return head


def blocked_result(
    shard: Shard, finding: Finding, duration_s: float, *, remediation: str | None = None
) -> PreflightResult:
    """A blocked result for a failure around the login (engine down, timeout, no volume)."""
    return PreflightResult(
        status="blocked",
        reason=finding.detail,
        shard=shard,
        remediation=remediation or messages.render_fix(finding.fix or Fix.RETRY, shard),
        duration_s=round(duration_s, 3),
        findings=(finding,),
    )


def _mode(value: object) -> int | None:
    if isinstance(value, str):
        try:
            return int(value, 8)
        except ValueError:
            return None
    return None


def check_directory(directory: Mapping[str, Any], codex_home: str, job_uid: int) -> list[Finding]:
    """The volume root: owned by the job uid, 0700, writable (refreshed tokens go there)."""
    if directory.get("exists") is not True:
        error = directory.get("error", "missing")
        detail = f"{codex_home} is not accessible to uid {job_uid} ({error})"
        return [Finding("directory", "blocked", detail, Fix.REPAIR)]
    found: list[Finding] = []
    if directory.get("uid") != job_uid:
        detail = (
            f"the volume root is owned by uid {directory.get('uid')}, not the job uid {job_uid}"
        )
        found.append(Finding("directory owner", "blocked", detail, Fix.REPAIR))
    elif _mode(directory.get("mode")) != 0o700:
        detail = f"the volume root has mode {directory.get('mode')}, not 0700"
        found.append(Finding("directory mode", "blocked", detail, Fix.REPAIR))
    else:
        found.append(Finding("directory", "ok", f"owned by {job_uid}, mode 0700"))
    if directory.get("writable") is not True:
        error = str(directory.get("write_error"))
        detail = (
            f"uid {job_uid} cannot write to the volume ({error}); "
            "the Codex CLI must write refreshed tokens back"
        )
        # Owner and modes cannot fix a read-only filesystem: the volume itself is wrong.
        fix = Fix.CHECK_VOLUME if "read-only" in error.lower() else Fix.REPAIR
        found.append(Finding("directory writable", "blocked", detail, fix))
    else:
        found.append(
            Finding("directory writable", "ok", "uid can create files (token refresh possible)")
        )
    return found


def _auth_permissions(auth_file: Mapping[str, Any], job_uid: int) -> Finding:
    # Owner and mode come from stat, which works even when the job uid cannot read the file.
    if auth_file.get("uid") != job_uid:
        detail = f"auth.json is owned by uid {auth_file.get('uid')}, not the job uid {job_uid}"
        return Finding("auth.json owner", "blocked", detail, Fix.REPAIR)
    if _mode(auth_file.get("mode")) != 0o600:
        detail = f"auth.json has mode {auth_file.get('mode')}, not 0600"
        return Finding("auth.json mode", "blocked", detail, Fix.REPAIR)
    return Finding("auth.json permissions", "ok", f"owned by {job_uid}, mode 0600")


def _auth_content(inspection: Mapping[str, Any]) -> Finding:
    if inspection.get("parse_error"):
        return Finding(
            "auth.json content", "blocked", str(inspection["parse_error"]), Fix.SIGN_IN_AGAIN
        )
    if inspection.get("auth_mode") == "unknown":
        detail = "auth.json holds neither ChatGPT tokens nor an API key nor an access token"
        return Finding("auth.json content", "blocked", detail, Fix.SIGN_IN_AGAIN)
    if inspection.get("problems"):
        detail = "; ".join(inspection["problems"])
        return Finding("auth.json content", "blocked", detail, Fix.SIGN_IN_AGAIN)
    if inspection.get("auth_mode") == "api_key":
        return Finding("auth mode", "ok", "API key login (not a ChatGPT sign-in)")
    if inspection.get("auth_mode") == "access_token":
        kind = str(inspection.get("access_token_kind") or "access token").replace("_", " ")
        detail = (
            f"enterprise access token ({kind}); no refresh token: sign in again before it expires"
        )
        return Finding("auth mode", "ok", detail)
    return Finding("auth mode", "ok", "ChatGPT sign-in with access and refresh tokens")


def check_auth_file(
    auth_file: Mapping[str, Any], inspection: Mapping[str, Any], job_uid: int
) -> list[Finding]:
    """auth.json: present, owned by the job uid, 0600, readable, a usable login."""
    if auth_file.get("exists") is False:
        # A new volume (or one emptied by a move): "sign in", not "again".
        detail = "no auth.json: the volume is not logged in"
        return [Finding("auth.json", "blocked", detail, Fix.SIGN_IN)]
    if auth_file.get("exists") is not True:
        error = auth_file.get("error", "unknown")
        detail = f"auth.json cannot be inspected by uid {job_uid} ({error})"
        return [Finding("auth.json", "blocked", detail, Fix.REPAIR)]
    found = [_auth_permissions(auth_file, job_uid)]
    if auth_file.get("readable") is False:
        detail = f"auth.json cannot be read by uid {job_uid} ({auth_file.get('error')})"
        found.append(Finding("auth.json readable", "blocked", detail, Fix.REPAIR))
    else:
        found.append(_auth_content(inspection))
    return found


def check_freshness(inspection: Mapping[str, Any], warn_after_days: float) -> list[Finding]:
    """Token expiry and the age of ``last_refresh`` of a usable ChatGPT login."""
    if inspection.get("auth_mode") == "access_token" and not inspection.get("problems"):
        return check_access_token_expiry(inspection)
    if inspection.get("auth_mode") != "chatgpt" or inspection.get("problems"):
        return []
    found: list[Finding] = []
    expires = inspection.get("access_token_expires_at")
    if inspection.get("access_token_expired"):
        detail = f"expired at {expires}; the Codex CLI refreshes it on next use"
        found.append(Finding("access token", "info", detail))
    elif expires:
        found.append(Finding("access token", "ok", f"valid until {expires}"))
    age = inspection.get("last_refresh_age_days")
    if isinstance(age, bool) or not isinstance(age, int | float):
        return found
    if age < -FUTURE_TOLERANCE_DAYS:
        detail = (
            f"last_refresh is dated {-age:.1f} days in the future: a clock or the file is "
            "wrong, so the login's age cannot be judged"
        )
        found.append(Finding("last refresh", "warn", detail, Fix.CHECK_CLOCK))
    elif age > warn_after_days:
        detail = f"last refreshed {age:.1f} days ago (warning threshold {warn_after_days:g})"
        found.append(Finding("last refresh", "warn", detail, Fix.REFRESH_SOON))
    else:
        found.append(Finding("last refresh", "ok", f"{max(age, 0.0):.1f} days ago"))
    return found


def check_access_token_expiry(inspection: Mapping[str, Any]) -> list[Finding]:
    """An access-token login has no refresh chain: expired blocks, nearly expired warns."""
    expires = inspection.get("access_token_expires_at")
    if inspection.get("access_token_expired"):
        detail = (
            f"the access token expired at {expires}; an access-token login has no refresh token, "
            "so the Codex CLI cannot renew it"
        )
        return [Finding("access token", "blocked", detail, Fix.SIGN_IN_AGAIN)]
    hours = inspection.get("access_token_remaining_hours")
    if isinstance(hours, bool) or not isinstance(hours, int | float):
        return [Finding("access token", "info", "expiry unknown (not a JWT); no refresh token")]
    if hours < ACCESS_TOKEN_WARN_HOURS:
        detail = (
            f"the access token expires at {expires} (in {max(hours, 0.0):.1f} h) and cannot be "
            "refreshed"
        )
        return [Finding("access token", "warn", detail, Fix.SIGN_IN_AGAIN)]
    return [Finding("access token", "ok", f"valid until {expires} (no refresh token)")]


def check_credential_store(store: Mapping[str, Any]) -> list[Finding]:
    """The CLI must keep the login in auth.json on the volume, and nothing may switch that."""
    if not store:
        return []  # a report from a probe that predates the check
    effective, source = store.get("effective"), store.get("source")
    if effective != "file":
        detail = (
            f"the Codex CLI would keep this login in its '{effective}' credential store (set by "
            f"{source}), not in auth.json on the volume"
        )
        return [Finding("credential store", "blocked", detail, Fix.PIN_FILE_STORE)]
    if not store.get("pinned"):
        detail = (
            "file storage is not pinned by a root-owned /etc/codex/managed_config.toml: a job or "
            "a repository's .codex/config.toml could switch the login away from auth.json"
        )
        return [Finding("credential store", "warn", detail, Fix.PIN_FILE_STORE)]
    return [Finding("credential store", "ok", "file (pinned by /etc/codex/managed_config.toml)")]


def rejection(probe: Mapping[str, Any]) -> tuple[str, str] | None:
    """(reason, since) when the server rejected the login that auth.json still holds.

    The worker passes the quarantine it recorded (moonmind_codex.core.health) into the job
    container; the gate reports it beside the digest of auth.json. Another digest is a new
    login: it goes on (and the worker lifts the quarantine).
    """
    quarantined = probe.get("quarantine")
    digest = probe.get("auth_digest")
    if not isinstance(quarantined, Mapping) or not isinstance(digest, str):
        return None
    if quarantined.get("auth_digest") != digest:
        return None
    return str(quarantined.get("reason")), str(quarantined.get("since"))


def check_quarantine(probe: Mapping[str, Any]) -> list[Finding]:
    """A login the server rejected stays blocked until a new login is imported."""
    found = rejection(probe)
    if found is None:
        return []
    reason, since = found
    detail = (
        f"the server rejected this login ({reason}, {since}); the shard is quarantined until a "
        "new login is imported"
    )
    return [Finding("server rejection", "blocked", detail, Fix.SIGN_IN_REJECTED)]


def copied_login(probe: Mapping[str, Any]) -> str | None:
    """Who holds the login this volume still holds, when the worker fenced it as a copy."""
    fenced = probe.get("fence")
    digest = probe.get("auth_digest")
    if not isinstance(fenced, Mapping) or not isinstance(digest, str):
        return None
    if fenced.get("auth_digest") != digest:
        return None  # another login was imported since: the worker judges it afresh
    return (
        f"shard {fenced.get('shard')} (volume {fenced.get('volume')} on host {fenced.get('host')})"
    )


def check_fence(probe: Mapping[str, Any]) -> list[Finding]:
    """A copy of a login another shard registered first is blocked until it changes."""
    holder = copied_login(probe)
    if holder is None:
        return []
    detail = (
        f"this volume holds the same ChatGPT login as {holder}, which registered it first: "
        "two copies of one login log each other out (each refresh replaces the refresh token)"
    )
    return [Finding("copied login", "blocked", detail, Fix.LOGIN_COPIED)]


def check_cli_status(status_run: Mapping[str, Any], auth_mode: object = None) -> Finding:
    """The real CLI's own verdict (``codex login status``)."""
    summary = status_run.get("summary", "not run")
    if status_run.get("error"):
        return Finding("codex login status", "blocked", str(status_run["error"]), Fix.RETRY)
    exit_code = status_run.get("exit_code")
    if auth_mode == "access_token" and summary == UNVERIFIED_OFFLINE:
        # The CLI checks an access token with the sign-in service even for `login status`; the
        # probe runs without network, so the file's own checks (shape, expiry) decide here.
        return Finding("codex login status", "info", f"exit {exit_code}: {summary}")
    if exit_code != 0:
        detail = f"exit {exit_code}: {summary}"
        return Finding("codex login status", "blocked", detail, Fix.SIGN_IN_AGAIN)
    return Finding("codex login status", "ok", str(summary))


def verdict(
    shard: Shard,
    findings: list[Finding],
    *,
    auth_mode: str | None,
    age_days: float | None,
    duration_s: float,
    rejected: tuple[str, str] | None = None,
    copy_of: str | None = None,
) -> PreflightResult:
    """The worst finding decides; the first of equals gives the reason and the fix."""
    worst = max(findings, key=lambda f: _SEVERITY[f.status])
    status: Status = "ok"
    if worst.status in ("blocked", "warn"):
        status = "blocked" if worst.status == "blocked" else "warn"
    if status == "ok":
        reason = {
            "api_key": "logged in with an API key",
            "access_token": "logged in with an enterprise access token",
        }.get(str(auth_mode), "logged in with ChatGPT")
        remediation = None
    else:
        reason = worst.detail
        fix = worst.fix or Fix.RETRY
        remediation = messages.render_fix(
            fix, shard, age_days=age_days, rejected=rejected, copy_of=copy_of
        )
    return PreflightResult(
        status=status,
        reason=reason,
        shard=shard,
        remediation=remediation,
        duration_s=round(duration_s, 3),
        findings=tuple(findings),
        auth_mode=auth_mode,
    )


def evaluate(
    probe: Mapping[str, Any], shard: Shard, policy: LoginPolicy, duration_s: float
) -> PreflightResult:
    """Turn a probe report into a verdict."""
    inspection = probe.get("inspection") or {}
    findings = [
        # First: no repair helps a login the server rejected.
        *check_quarantine(probe),
        *check_fence(probe),
        *check_directory(
            probe.get("dir") or {}, probe.get("codex_home", "the Codex home"), policy.job_uid
        ),
        *check_auth_file(probe.get("auth_file") or {}, inspection, policy.job_uid),
        *check_freshness(inspection, policy.warn_after_days),
        *check_credential_store(probe.get("credential_store") or {}),
        check_cli_status(probe.get("codex_status") or {}, inspection.get("auth_mode")),
    ]
    age = inspection.get("last_refresh_age_days")
    return verdict(
        shard,
        findings,
        auth_mode=inspection.get("auth_mode"),
        age_days=float(age) if isinstance(age, int | float) else None,
        duration_s=duration_s,
        rejected=rejection(probe),
        copy_of=copied_login(probe),
    )
