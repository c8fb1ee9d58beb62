"""The host's half of the pre-flight a job container runs on itself: the environment that asks
the gate (``moonmind_codex.gate.check``) for its check, the verdict line read back from the
job's stderr, the verdict cache of a worker process, and the engine steps before a job starts
(volume present, network present, container started) that block the phase with a fix.

A phase's job container checks its login as its first step, under the volume's lock, so a
phase costs one container start; :mod:`.preflight` runs the operators' stand-alone check.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

import docker
import docker.errors

from moonmind_codex.core.exitcodes import ExitCode
from moonmind_codex.core.messages import Fix
from moonmind_codex.core.preflight_eval import (
    Finding,
    LoginPolicy,
    PreflightResult,
    blocked_result,
    evaluate,
)
from moonmind_codex.core.probe_report import PROBE_VERSION
from moonmind_codex.core.shard import Shard
from moonmind_codex.engine.client import ENGINE_ERRORS
from moonmind_codex.gate.check import (
    FENCE_ENV,
    FENCED_ENV,
    JOB_UID_ENV,
    KNOWN_VERDICT_ENV,
    QUARANTINED_ENV,
    TIMEOUT_ENV,
    VERDICT_PREFIX,
    WARN_DAYS_ENV,
)
from moonmind_codex.settings import ENV_PREFIX, Settings

# Sections every probe report has (docs/internals.md); anything else is not the probe talking.
_REPORT_SECTIONS = ("dir", "auth_file", "codex_status")


def parse_probe_output(output: str) -> dict[str, Any] | None:
    """The probe's report from its stdout, or None when it printed something else."""
    lines = [line for line in output.splitlines() if line.strip()]
    if not lines:
        return None
    try:
        report = json.loads(lines[-1])
    except ValueError:
        return None
    if not isinstance(report, dict) or report.get("probe_version") != PROBE_VERSION:
        return None
    if not all(isinstance(report.get(section), dict) for section in _REPORT_SECTIONS):
        return None
    return report


class PreflightBlocked(Exception):
    """The check cannot judge the login; the finding says why and which fix applies."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.detail)
        self.finding = finding


@contextlib.contextmanager
def engine_step(during: str) -> Iterator[None]:
    """The one place where a lost engine becomes a blocked check."""
    try:
        yield
    except PreflightBlocked:
        raise
    except ENGINE_ERRORS as exc:
        detail = f"lost the Docker engine {during} ({type(exc).__name__})"
        raise PreflightBlocked(
            Finding("docker engine", "blocked", detail, Fix.START_DOCKER)
        ) from exc


def blocked_by(name: str, detail: str, fix: Fix) -> PreflightBlocked:
    return PreflightBlocked(Finding(name, "blocked", detail, fix))


def require_volume(client: docker.DockerClient, shard: Shard) -> None:
    """Blocks unless the shard's auth volume exists; never creates it.

    An empty stand-in made by the engine on first mount would pass as "not logged in" and hide
    the real problem (a host without its shard's volume).
    """
    with engine_step("while looking up the volume"):
        try:
            client.volumes.get(shard.volume)
        except docker.errors.NotFound:
            detail = f"auth volume {shard.volume} does not exist on host {shard.host}"
            raise blocked_by("volume", detail, Fix.CREATE_VOLUME) from None


def missing_network(exc: docker.errors.APIError, network: str) -> bool:
    """Whether the engine refused a container because ``network`` does not exist."""
    return f"network {network} not found" in str(exc.explanation or exc)


@contextlib.contextmanager
def container_start_step(settings: Settings, shard: Shard, during: str) -> Iterator[None]:
    """Creating or starting a container on the shard's volume; failures block with the fix."""
    with engine_step(during):
        try:
            yield
        except docker.errors.ImageNotFound:
            image = settings.job_image_for(shard.number)
            detail = f"job image {image} is not on host {shard.host}"
            raise blocked_by("job image", detail, Fix.LOAD_IMAGE) from None
        except docker.errors.NotFound as exc:
            if not missing_network(exc, settings.job_network):
                raise blocked_by(
                    "volume mount",
                    f"a job container cannot start on volume {shard.volume}: "
                    f"{exc.explanation or exc}",
                    Fix.CHECK_VOLUME,
                ) from None
            detail = (
                f"job network {settings.job_network} ({ENV_PREFIX}JOB_NETWORK) does not exist "
                f"on host {shard.host}"
            )
            raise blocked_by("job network", detail, Fix.CREATE_JOB_NETWORK) from None
        except docker.errors.APIError as exc:
            # e.g. a volume on a read-only filesystem: no job could start on it.
            detail = (
                f"a job container cannot start on volume {shard.volume}: {exc.explanation or exc}"
            )
            raise blocked_by("volume mount", detail, Fix.CHECK_VOLUME) from None


class CliVerdictCache:
    """The last good ``codex login status`` verdict per volume, in one worker process.

    The job container's pre-flight skips the CLI when its inputs (the CLI version, auth.json,
    config files) hash to the key of that verdict; anything changed runs the CLI again.
    """

    def __init__(self) -> None:
        self._known: dict[str, str] = {}

    def known(self, volume: str) -> str | None:
        return self._known.get(volume)

    def learn(self, volume: str, report: Mapping[str, Any] | None) -> None:
        status = (report or {}).get("codex_status") or {}
        key = (report or {}).get("cli_verdict_key")
        if isinstance(key, str) and status.get("exit_code") == 0 and not status.get("error"):
            self._known[volume] = f"{key} {status.get('summary', 'Logged in')}"
        else:
            self._known.pop(volume, None)


def gate_environment(
    settings: Settings,
    known_verdict: str | None,
    quarantined: str | None = None,
    *,
    fence: bool = False,
    fenced: str | None = None,
) -> dict[str, str]:
    """What a job container needs to check its own login first (nothing secret).

    ``quarantined`` is ``AUTH_DIGEST REASON SINCE`` of a login the server rejected
    (:meth:`moonmind_codex.store.models.ShardHealth.gate_value`): a digest is not the login.
    ``fence`` asks for the login's one-way digest (never the fleet's key); ``fenced`` is
    :func:`moonmind_codex.core.fence.gate_value` of a copied login.
    """
    environment = {
        "MOONMIND_CODEX_PREFLIGHT": "1",
        JOB_UID_ENV: str(settings.job_uid),
        WARN_DAYS_ENV: repr(settings.last_refresh_warn_days),
        TIMEOUT_ENV: repr(settings.preflight_timeout_seconds),
    }
    if known_verdict:
        environment[KNOWN_VERDICT_ENV] = known_verdict
    if quarantined:
        environment[QUARANTINED_ENV] = quarantined
    if fence:
        environment[FENCE_ENV] = "1"
    if fenced:
        environment[FENCED_ENV] = fenced
    return environment


def verdict_line(stderr: bytes) -> bytes | None:
    """The gate's line: the first line of the job's stderr, printed before the command ran."""
    first = stderr.split(b"\n", 1)[0]
    return first if first.startswith(VERDICT_PREFIX.encode()) else None


def read_verdict(
    settings: Settings,
    shard: Shard,
    line: bytes | None,
    duration_s: float,
    exit_code: int | None = None,
) -> tuple[PreflightResult, dict[str, Any] | None]:
    """The judged verdict of a job container's own pre-flight, and its report.

    Without a readable line the entry point ended before or in its pre-flight, and ran no
    command: blocked, with the fix its exit code points to.
    """
    report = None
    if line is not None:
        report = parse_probe_output(line[len(VERDICT_PREFIX) :].decode("utf-8", "replace"))
    if report is None or report.get("gate") not in ("go", "blocked"):
        if exit_code == ExitCode.CANTCREAT:
            detail = (
                f"uid {settings.job_uid} cannot open the root of volume {shard.volume} to "
                "lock it (the volume root is not the job uid's: its owner or mode changed)"
            )
            finding = Finding("directory writable", "blocked", detail, Fix.REPAIR)
        else:
            detail = f"the job's pre-flight printed no readable verdict (exit code {exit_code})"
            finding = Finding("pre-flight", "blocked", detail, Fix.RETRY)
        return blocked_result(shard, finding, duration_s), None
    policy = LoginPolicy(job_uid=settings.job_uid, warn_after_days=settings.last_refresh_warn_days)
    result = evaluate(report, shard, policy, duration_s)
    if report["gate"] == "blocked" and not result.blocked:
        # The job image judged differently from this worker: a version skew between images.
        detail = (
            f"the job image's pre-flight blocked the phase although this worker judges the "
            f"login {result.status}: the job and worker images are of different versions"
        )
        result = blocked_result(
            shard, Finding("pre-flight", "blocked", detail, Fix.LOAD_IMAGE), duration_s
        )
    return result, report
