"""What a phase's job tells about its shard's login, recorded in the run store: a login the
server rejected is quarantined (and lifted when a new login arrives), and a login that is a
copy of another shard's is fenced (moonmind_codex.core.health and .fence decide)."""

from __future__ import annotations

import logging
from pathlib import Path

from moonmind_codex.core import fence, health
from moonmind_codex.core.messages import login_command
from moonmind_codex.core.shard import Shard
from moonmind_codex.engine.jobs import (
    JobResult,
)
from moonmind_codex.store.models import ShardHealth
from moonmind_codex.store.runstore import RunStore
from moonmind_codex.worker.request import PhaseRequest

log = logging.getLogger(__name__)


def _log_excerpt(path: Path) -> str:
    """The head and tail of a phase log that the classification reads (never all of it)."""
    try:
        with path.open("rb") as log_file:
            head = log_file.read(health.HEAD_BYTES + health.TAIL_BYTES + 1)
            if len(head) <= health.HEAD_BYTES + health.TAIL_BYTES:
                return head.decode("utf-8", "replace")
            log_file.seek(-health.TAIL_BYTES, 2)
            tail = log_file.read(health.TAIL_BYTES)
    except OSError:
        return ""
    return (head[: health.HEAD_BYTES] + b"\n" + tail).decode("utf-8", "replace")


def record_health(
    store: RunStore,
    request: PhaseRequest,
    shard: Shard,
    before: ShardHealth | None,
    job: JobResult,
) -> str | None:
    """Lift a quarantine a new login ended; quarantine a login the server rejected.

    Returns the note for the attempt's error when this job's login was rejected.
    """
    digest = (job.preflight_report or {}).get("auth_digest")
    if not isinstance(digest, str):
        return None  # no gate ran, or no auth.json: nothing to judge or lift
    rejected = before.auth_digest if before is not None and before.quarantined else None
    if (
        before is not None
        and rejected is not None
        and rejected != digest
        and store.lift_quarantine(
            shard.volume,
            quarantined_digest=rejected,
            auth_digest=digest,
            run_id=request.run_id,
            phase=request.phase,
        )
    ):
        log.warning(
            "a new login was imported into volume %s: the quarantine of shard %s (%s, "
            "since %s) is lifted",
            shard.volume,
            shard.number,
            before.reason,
            before.since_text,
        )
    if job.outcome not in ("failed", "timed_out") or job.log_error is not None:
        return None
    found = health.classify(_log_excerpt(job.log_path), job.exit_code)
    if found.kind == "transient":
        log.warning(
            "phase %s of run %s failed transiently (%s): shard %s stays in service",
            request.phase,
            request.run_id,
            found.reason,
            shard.number,
        )
    if not found.rejected or found.reason is None:
        return None
    quarantined = store.quarantine(
        shard.volume,
        host=shard.host,
        shard=shard.number,
        reason=found.reason,
        auth_digest=digest,
        run_id=request.run_id,
        phase=request.phase,
    )
    note = (
        f"the server rejected the login in volume {shard.volume} ({found.reason}, "
        f"{quarantined.since_text}): shard {shard.number} is quarantined until a new login is "
        f"imported; on host {shard.host} run {login_command(shard)}"
    )
    log.error("%s", note)
    return note


def record_login(
    store: RunStore, key: tuple[bytes, str], shard: Shard, job: JobResult
) -> str | None:
    """Register the fingerprint of the login the job's pre-flight saw; say when it is a copy."""
    report = job.preflight_report or {}
    digest = report.get("login_digest")
    if not isinstance(digest, str) or len(digest) != 64:
        return None  # no ChatGPT login (API key, access token, none): nothing to fence
    try:
        fingerprint = fence.fingerprint(key[0], digest)
    except ValueError:
        return None  # not hex: not the gate talking
    auth_digest = report.get("auth_digest")
    verdict = store.register_login(
        shard.volume,
        host=shard.host,
        shard=shard.number,
        fingerprint=fingerprint,
        key_id=key[1],
        auth_digest=auth_digest if isinstance(auth_digest, str) else None,
    )
    if not verdict.shared:
        return None
    if not verdict.fenced:
        log.warning(
            "the login of shard %s (volume %s) is also held by %s, which registered it later "
            "and is fenced",
            shard.number,
            shard.volume,
            ", ".join(h.text() for h in verdict.others),
        )
        return None
    note = (
        f"volume {shard.volume} holds the same ChatGPT login as {verdict.owner.text()}, "
        f"which registered it first: shard {shard.number} is fenced until it is signed in "
        f"with its own login ({login_command(shard)} on host {shard.host}) or an operator "
        f"runs moonmind-codex login-fence resolve --shard {shard.number}"
    )
    log.error("%s", note)
    return note
