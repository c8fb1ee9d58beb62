"""Judge a pre-flight probe report: ok, warn or blocked, with the reason and the exact fix.

Pure: takes the probe's JSON (see docs/internals.md) and returns a :class:`PreflightResult`.
Running the probe container is :mod:`moonmind_codex.preflight`'s job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from moonmind_codex import messages

Status = Literal["ok", "warn", "blocked"]
_SEVERITY = {"ok": 0, "info": 0, "warn": 1, "blocked": 2}


@dataclass(frozen=True)
class Check:
    name: str
    status: Literal["ok", "info", "warn", "blocked"]
    detail: str


@dataclass(frozen=True)
class PreflightResult:
    status: Status
    reason: str
    shard: int
    volume: str
    host: str
    remediation: str | None
    duration_s: float
    checks: tuple[Check, ...] = ()
    auth_mode: str | None = None
    checked_at: str = field(
        default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    )

    @property
    def blocked(self) -> bool:
        return self.status == "blocked"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["checks"] = [asdict(c) for c in self.checks]
        return data

    def message(self) -> str:
        head = (
            f"Codex login check {self.status.upper()} for shard {self.shard} "
            f"(volume {self.volume} on host {self.host}): {self.reason}"
        )
        if self.remediation:
            return f"{head}\nFix: {self.remediation}"
        return head


def blocked_result(
    reason: str,
    *,
    shard: int,
    volume: str,
    host: str,
    remediation: str,
    duration_s: float,
    check_name: str = "infrastructure",
) -> PreflightResult:
    """A blocked result for a failure around the login (engine down, timeout, no volume)."""
    return PreflightResult(
        status="blocked",
        reason=reason,
        shard=shard,
        volume=volume,
        host=host,
        remediation=remediation,
        duration_s=round(duration_s, 3),
        checks=(Check(check_name, "blocked", reason),),
    )


def _mode(value: object) -> int | None:
    if isinstance(value, str):
        try:
            return int(value, 8)
        except ValueError:
            return None
    return None


def evaluate(
    probe: Mapping[str, Any],
    *,
    shard: int,
    volume: str,
    host: str,
    job_uid: int,
    job_gid: int,
    warn_after_days: float,
    duration_s: float,
) -> PreflightResult:
    """Turn a probe report into a verdict. The first blocking check gives the reason."""
    checks: list[Check] = []
    fix: list[str] = []
    relogin = messages.relogin(shard, volume, host)
    repair = messages.repair(shard, volume, host)

    def add(
        name: str,
        status: Literal["ok", "info", "warn", "blocked"],
        detail: str,
        remedy: str | None = None,
    ) -> None:
        checks.append(Check(name, status, detail))
        if status == "blocked" and remedy is not None:
            fix.append(remedy)

    directory = probe.get("dir") or {}
    auth_file = probe.get("auth_file") or {}
    inspection = probe.get("inspection") or {}
    status_run = probe.get("codex_status") or {}

    # Directory: must belong to the job uid, 0700, writable (refreshed tokens are written back).
    if directory.get("exists") is not True:
        add(
            "directory",
            "blocked",
            f"{probe.get('codex_home', 'the Codex home')} is not accessible to uid {job_uid} "
            f"({directory.get('error', 'missing')})",
            repair,
        )
    else:
        dir_mode = _mode(directory.get("mode"))
        if directory.get("uid") != job_uid:
            add(
                "directory owner",
                "blocked",
                f"the volume root is owned by uid {directory.get('uid')}, not the job uid "
                f"{job_uid}",
                repair,
            )
        elif dir_mode != 0o700:
            add(
                "directory mode",
                "blocked",
                f"the volume root has mode {directory.get('mode')}, not 0700",
                repair,
            )
        else:
            add("directory", "ok", f"owned by {job_uid}, mode 0700")
        if directory.get("writable") is not True:
            add(
                "directory writable",
                "blocked",
                f"uid {job_uid} cannot write to the volume ({directory.get('write_error')}); "
                "the Codex CLI must write refreshed tokens back",
                repair,
            )
        else:
            add("directory writable", "ok", "uid can create files (token refresh possible)")

    # auth.json: present, readable, 0600, owned by the job uid, a usable login.
    if auth_file.get("exists") is False:
        # A new volume (or one emptied by a move): "sign in", not "again".
        add(
            "auth.json",
            "blocked",
            "no auth.json: the volume is not logged in",
            messages.relogin(shard, volume, host, again=False),
        )
    elif auth_file.get("exists") is not True:
        add(
            "auth.json",
            "blocked",
            f"auth.json cannot be inspected by uid {job_uid} ({auth_file.get('error', 'unknown')})",
            repair,
        )
    else:
        # Owner and mode come from stat, which works even when the job uid cannot read the file.
        if auth_file.get("uid") != job_uid:
            add(
                "auth.json owner",
                "blocked",
                f"auth.json is owned by uid {auth_file.get('uid')}, not the job uid {job_uid}",
                repair,
            )
        elif _mode(auth_file.get("mode")) != 0o600:
            add(
                "auth.json mode",
                "blocked",
                f"auth.json has mode {auth_file.get('mode')}, not 0600",
                repair,
            )
        else:
            add("auth.json permissions", "ok", f"owned by {job_uid}, mode 0600")
        if auth_file.get("readable") is False:
            add(
                "auth.json readable",
                "blocked",
                f"auth.json cannot be read by uid {job_uid} ({auth_file.get('error')})",
                repair,
            )
        elif inspection.get("parse_error"):
            add("auth.json content", "blocked", str(inspection["parse_error"]), relogin)
        elif inspection.get("auth_mode") == "unknown":
            add(
                "auth.json content",
                "blocked",
                "auth.json holds neither ChatGPT tokens nor an API key",
                relogin,
            )
        elif inspection.get("problems"):
            add("auth.json content", "blocked", "; ".join(inspection["problems"]), relogin)
        elif inspection.get("auth_mode") == "api_key":
            add("auth mode", "ok", "API key login (not a ChatGPT sign-in)")
        else:
            add("auth mode", "ok", "ChatGPT sign-in with access and refresh tokens")

    if inspection.get("auth_mode") == "chatgpt" and not inspection.get("problems"):
        expires = inspection.get("access_token_expires_at")
        if inspection.get("access_token_expired"):
            add(
                "access token",
                "info",
                f"expired at {expires}; the Codex CLI refreshes it on next use",
            )
        elif expires:
            add("access token", "ok", f"valid until {expires}")
        age = inspection.get("last_refresh_age_days")
        if isinstance(age, int | float) and age > warn_after_days:
            add(
                "last refresh",
                "warn",
                f"last refreshed {age:.1f} days ago (warning threshold {warn_after_days:g})",
            )
            fix.append(messages.refresh_soon(shard, volume, host, float(age)))
        elif isinstance(age, int | float):
            add("last refresh", "ok", f"{age:.1f} days ago")

    # The real CLI's own verdict.
    exit_code = status_run.get("exit_code")
    summary = status_run.get("summary", "not run")
    if status_run.get("error"):
        add(
            "codex login status",
            "blocked",
            str(status_run["error"]),
            messages.check_docker_then_retry(shard, host),
        )
    elif exit_code != 0:
        add("codex login status", "blocked", f"exit {exit_code}: {summary}", relogin)
    else:
        add("codex login status", "ok", str(summary))

    # max() returns the first of equals: the reason is the first blocking (or warning) check.
    worst = max(checks, key=lambda c: _SEVERITY[c.status])
    status: Status = "ok"
    if worst.status == "blocked":
        status = "blocked"
    elif worst.status == "warn":
        status = "warn"
    if status == "ok":
        mode = inspection.get("auth_mode")
        reason = "logged in with an API key" if mode == "api_key" else "logged in with ChatGPT"
    else:
        reason = worst.detail
    return PreflightResult(
        status=status,
        reason=reason,
        shard=shard,
        volume=volume,
        host=host,
        remediation=fix[0] if fix else None,
        duration_s=round(duration_s, 3),
        checks=tuple(checks),
        auth_mode=inspection.get("auth_mode"),
    )
