"""The pre-flight inside the job container: the first step of every Codex phase's job.

The image's entry point runs this after it took the auth volume's lock and before it starts the
phase's command, so the login that was checked is the login the command uses (no gap, no
second container). It gathers the same report as the stand-alone probe, judges it with the same
rules (``preflight_eval``), prints the report on ONE stderr line that starts with
:data:`VERDICT_PREFIX`, and exits 0 (go on) or :attr:`ExitCode.BLOCKED` (the command is not
started). The worker reads that line, judges the report again with its own settings for the
message, and removes the line from the phase log.

``codex login status`` costs about as much as starting the container; its verdict depends only on
the CLI version and the files it reads. The worker therefore passes the key of the last good
verdict for this volume (:data:`KNOWN_VERDICT_ENV`); when the files and CLI are unchanged the CLI
is not run again. Standard library only, like the probe: the job image has no other packages.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from moonmind_codex.core import fence
from moonmind_codex.core.exitcodes import ExitCode
from moonmind_codex.core.preflight_eval import LoginPolicy, evaluate
from moonmind_codex.core.probe_report import AUTH_FILE_NAME
from moonmind_codex.core.shard import Shard
from moonmind_codex.gate.probe import (
    MANAGED_CONFIG,
    auth_digest,
    codex_home,
    gather,
    run_codex_status,
)

VERDICT_PREFIX = "[moonmind-codex] pre-flight "
# Set by the worker on the job container; none of them is secret.
JOB_UID_ENV = "MOONMIND_CODEX_GATE_JOB_UID"
WARN_DAYS_ENV = "MOONMIND_CODEX_GATE_WARN_DAYS"
TIMEOUT_ENV = "MOONMIND_CODEX_GATE_TIMEOUT_SECONDS"
KNOWN_VERDICT_ENV = "MOONMIND_CODEX_GATE_KNOWN_VERDICT"
# ``AUTH_DIGEST REASON SINCE`` of a login the server rejected (see moonmind_codex.core.health): the
# gate blocks while auth.json still hashes to that digest, and goes on once a new login is in.
QUARANTINED_ENV = "MOONMIND_CODEX_GATE_QUARANTINED"
# "1": report the one-way ``login_digest`` of a ChatGPT login, which the worker keys with the
# fleet's fingerprint key (never passed here) to fence copied logins (moonmind_codex.core.fence).
FENCE_ENV = "MOONMIND_CODEX_GATE_FENCE"
# JSON ``{"auth_digest", "shard", "volume", "host"}``: this volume's login is a fenced copy of
# that shard's; the gate blocks while auth.json still hashes to ``auth_digest``.
FENCED_ENV = "MOONMIND_CODEX_GATE_FENCED"
# Files whose content decides what `codex login status` says (the managed layer outranks the
# others; config.toml can switch the credential store away from auth.json).
_CLI_INPUTS = (AUTH_FILE_NAME, "config.toml")
WORKSPACE = Path("/work")
# The judge needs a shard only for its messages, which the worker renders itself.
_ANY_SHARD = Shard(number=0, queue="-", volume="-", host="-")


def cli_version() -> str | None:
    """The installed Codex CLI's version, read from its npm package (no node start-up)."""
    found = shutil.which("codex")
    if found is None:
        return None
    package = Path(found).resolve().parent.parent / "package.json"
    try:
        version = json.loads(package.read_text(encoding="utf-8")).get("version")
    except (OSError, ValueError, AttributeError):
        return None
    return version if isinstance(version, str) and version else None


def verdict_key(version: str | None, inputs: Mapping[str, bytes | None]) -> str | None:
    """What `codex login status` depends on, as one digest; None when the CLI is unknown."""
    if version is None:
        return None
    digest = hashlib.sha256(f"codex-cli {version}\n".encode())
    for name in sorted(inputs):
        content = inputs[name]
        # Length-prefixed, so no two different sets of files make the same byte stream.
        marker = "absent" if content is None else str(len(content))
        digest.update(f"{name} {marker}\n".encode())
        digest.update(content or b"")
    return digest.hexdigest()


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def known_verdict(raw: str | None) -> tuple[str, str] | None:
    """``KEY SUMMARY`` from the worker: the key of a good verdict and the CLI's phrase."""
    if not raw:
        return None
    key, _, summary = raw.partition(" ")
    if len(key) != 64 or not summary:
        return None
    return key, summary


def quarantine(raw: str | None) -> dict[str, str] | None:
    """``AUTH_DIGEST REASON SINCE`` from the worker; the reason may hold spaces."""
    if not raw:
        return None
    digest, _, rest = raw.strip().partition(" ")
    reason, _, since = rest.rpartition(" ")
    if len(digest) != 64 or not reason.strip() or not since:
        return None
    return {"auth_digest": digest, "reason": reason.strip(), "since": since}


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    try:
        return float(env.get(name, default))
    except ValueError:
        return default


def check(env: Mapping[str, str], home: Path, now: datetime) -> tuple[dict[str, Any], bool]:
    """The report (with the CLI verdict's key) and whether the phase may go on."""
    run_id = env.get("MOONMIND_CODEX_RUN_ID")
    project = WORKSPACE / run_id if run_id else None  # the entry point checked the id
    report = gather(home, now, run_status=False, project=project)
    inputs = {name: _read_or_none(home / name) for name in _CLI_INPUTS}
    inputs["managed_config.toml"] = _read_or_none(MANAGED_CONFIG)
    key = verdict_key(cli_version(), inputs)
    known = known_verdict(env.get(KNOWN_VERDICT_ENV))
    if key is not None and known is not None and known[0] == key:
        status = {"exit_code": 0, "summary": known[1], "duration_s": 0.0, "error": None}
        status["cached"] = True
    else:
        status = run_codex_status(_float(env, TIMEOUT_ENV, 20.0))
        status["cached"] = False
    report["codex_status"] = status
    report["cli_verdict_key"] = key
    report["auth_digest"] = auth_digest(inputs[AUTH_FILE_NAME])
    quarantined = quarantine(env.get(QUARANTINED_ENV))
    if quarantined is not None:
        report["quarantine"] = quarantined
    if env.get(FENCE_ENV) == "1":
        report["login_digest"] = fence.login_digest(inputs[AUTH_FILE_NAME])
    fenced = fence.parse_gate_value(env.get(FENCED_ENV))
    if fenced is not None:
        report["fence"] = fenced
    policy = LoginPolicy(
        job_uid=int(_float(env, JOB_UID_ENV, os.getuid())),
        warn_after_days=_float(env, WARN_DAYS_ENV, 5.0),
    )
    go_on = not evaluate(report, _ANY_SHARD, policy, 0.0).blocked
    report["gate"] = "go" if go_on else "blocked"
    return report, go_on


def main() -> int:
    report, go_on = check(os.environ, codex_home(), datetime.now(UTC))
    sys.stderr.write(VERDICT_PREFIX + json.dumps(report, sort_keys=True) + "\n")
    sys.stderr.flush()
    return 0 if go_on else int(ExitCode.BLOCKED)


if __name__ == "__main__":
    sys.exit(main())
