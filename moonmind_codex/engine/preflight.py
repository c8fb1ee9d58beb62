"""Run the pre-flight login check, and read the one a job container ran on itself.

Two ways, one judge (``preflight_eval``): a Codex phase's job container checks its login as its
first step, under the volume's lock (``moonmind_codex.gate.check``; :func:`gate_environment`
asks for it, :func:`read_verdict` reads the answer), so a phase costs one container start.
Operators' checks (``moonmind-codex preflight``, ``login-check``, the playbooks) run the
stand-alone probe below, which takes no lock and runs no command.

The probe container mounts the shard's auth volume exactly as a job does (read-write at
``/home/app/.codex``, as the job uid) so it sees what the job will see. Infrastructure failures
(engine down, volume missing, timeout, a broken probe) never raise: they block the phase with
the reason, because a check that cannot run must not let the phase through.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
import docker.errors
import requests.exceptions

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
from moonmind_codex.engine.client import ENGINE_ERRORS, DockerUnavailable, connect
from moonmind_codex.engine.containers import LABEL, JobImageContainer, create_kwargs, unique_name
from moonmind_codex.gate.check import (
    FENCE_ENV,
    FENCED_ENV,
    JOB_UID_ENV,
    KNOWN_VERDICT_ENV,
    QUARANTINED_ENV,
    TIMEOUT_ENV,
    VERDICT_PREFIX,
    WARN_DAYS_ENV,
    quarantine,
)
from moonmind_codex.settings import ENV_PREFIX, Settings

__all__ = [
    "CliVerdictCache",
    "PreflightBlocked",
    "PreflightResult",
    "gate_environment",
    "probe_container",
    "read_verdict",
    "run_preflight",
    "run_preflights",
]

PROBE_COMMAND = ("moonmind-codex-probe",)
# Sections every probe report has (docs/internals.md); anything else is not the probe talking.
_REPORT_SECTIONS = ("dir", "auth_file", "codex_status")


class PreflightBlocked(Exception):
    """The check cannot judge the login; the finding says why and which fix applies."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.detail)
        self.finding = finding


def probe_container(shard: Shard) -> JobImageContainer:
    """The job's mount, no network; the probe replaces the entry point so it takes no lock."""
    return JobImageContainer(
        role="probe",
        shard=shard,
        command=[],
        name=unique_name("probe", shard),
        entrypoint=PROBE_COMMAND,
    )


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


def _blocked(name: str, detail: str, fix: Fix) -> PreflightBlocked:
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
            raise _blocked("volume", detail, Fix.CREATE_VOLUME) from None


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
            raise _blocked("job image", detail, Fix.LOAD_IMAGE) from None
        except docker.errors.NotFound as exc:
            if not missing_network(exc, settings.job_network):
                raise _blocked(
                    "volume mount",
                    f"a job container cannot start on volume {shard.volume}: "
                    f"{exc.explanation or exc}",
                    Fix.CHECK_VOLUME,
                ) from None
            detail = (
                f"job network {settings.job_network} ({ENV_PREFIX}JOB_NETWORK) does not exist "
                f"on host {shard.host}"
            )
            raise _blocked("job network", detail, Fix.CREATE_JOB_NETWORK) from None
        except docker.errors.APIError as exc:
            # e.g. a volume on a read-only filesystem: no job could start on it.
            detail = (
                f"a job container cannot start on volume {shard.volume}: {exc.explanation or exc}"
            )
            raise _blocked("volume mount", detail, Fix.CHECK_VOLUME) from None


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


# Set from the Dockerfile's CODEX_VERSION build argument: which Codex CLI an image carries.
CODEX_VERSION_LABEL = LABEL + "codex-version"


def job_image_versions(settings: Settings, shards: list[int]) -> dict[int, dict[str, str | None]]:
    """Each shard's job image and the Codex CLI version it carries (None: not on this host)."""
    images = {shard: settings.job_image_for(shard) for shard in shards}
    versions: dict[str, str | None] = {}
    client = connect(settings)
    try:
        for image in set(images.values()):
            try:
                versions[image] = client.images.get(image).labels.get(CODEX_VERSION_LABEL)
            except docker.errors.ImageNotFound:
                versions[image] = None
    finally:
        client.close()
    return {
        shard: {"job_image": image, "codex_version": versions[image]}
        for shard, image in images.items()
    }


def run_preflight(
    settings: Settings,
    shard_number: int,
    client: docker.DockerClient | None = None,
    recorded: Mapping[str, Any] | None = None,
) -> PreflightResult:
    """Check shard ``shard_number``'s login. Raises only for bad input (shard out of range).

    ``recorded``: what :func:`recorded_verdicts` read for this shard (read here when None).
    """
    shard = settings.locate_shard(shard_number)  # validates the shard before anything runs
    started = time.monotonic()
    own_client = client is None
    try:
        if client is None:
            client = connect(settings)
        report = _probe(settings, shard, client, started + settings.preflight_timeout_seconds)
    except DockerUnavailable as exc:
        # Its first sentence names the engine address; the remedy is the separate field.
        finding = Finding("docker engine", "blocked", str(exc).split(";")[0], Fix.START_DOCKER)
        return blocked_result(shard, finding, time.monotonic() - started)
    except PreflightBlocked as blocked:
        return blocked_result(shard, blocked.finding, time.monotonic() - started)
    finally:
        if own_client and client is not None:
            with contextlib.suppress(*ENGINE_ERRORS):
                client.close()
    report.update(
        recorded_verdicts(settings, [shard])[shard.volume] if recorded is None else recorded
    )
    policy = LoginPolicy(job_uid=settings.job_uid, warn_after_days=settings.last_refresh_warn_days)
    return evaluate(report, shard, policy, time.monotonic() - started)


def recorded_verdicts(settings: Settings, shards: Sequence[Shard]) -> dict[str, dict[str, Any]]:
    """What the run store holds against each shard's login, as the job's gate receives it.

    By volume. A quarantine (the server rejected the login) and a fence (the login is a later
    copy of another shard's) block the shard's phases while auth.json is the login they judged;
    the stand-alone check reports the same, so ``preflight`` and ``login-check`` never call a
    shard ok that its next phase would find blocked. The store is opened once for all of them.
    No run store yet (a fleet that has never run a phase) or one that cannot be read: nothing
    recorded to add.
    """
    from moonmind_codex.core import fence
    from moonmind_codex.store.engine import STORE_ERRORS, StoreUnavailable
    from moonmind_codex.store.runstore import RunStore

    found: dict[str, dict[str, Any]] = {shard.volume: {} for shard in shards}
    try:
        store = RunStore.open_existing(settings.database_url)
    except StoreUnavailable:
        return found
    try:
        for shard in shards:
            health = store.shard_health(shard.volume)
            quarantined = quarantine(health.gate_value() if health is not None else None)
            if quarantined is not None:
                found[shard.volume]["quarantine"] = quarantined
            verdict = store.login_fence(shard.volume)
            fenced = fence.parse_gate_value(fence.gate_value(verdict) if verdict else None)
            if fenced is not None:
                found[shard.volume]["fence"] = fenced
    except STORE_ERRORS:
        return {volume: {} for volume in found}
    finally:
        store.engine.dispose()
    return found


def run_preflights(
    settings: Settings, shard_numbers: Sequence[int], client: docker.DockerClient | None = None
) -> list[PreflightResult]:
    """Check several shards of this host at once (one probe container each, in parallel)."""
    for number in shard_numbers:
        settings.check_shard(number)  # bad input fails before any probe starts
    own_client = client is None
    try:
        if client is None:
            client = connect(settings)
    except DockerUnavailable:
        return [run_preflight(settings, n) for n in shard_numbers]  # each says the engine is down
    shards = [settings.locate_shard(n) for n in shard_numbers]
    recorded = recorded_verdicts(settings, shards)
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(len(shards), 8))) as pool:
            return list(
                pool.map(
                    lambda s: run_preflight(settings, s.number, client, recorded[s.volume]),
                    shards,
                )
            )
    finally:
        if own_client:
            with contextlib.suppress(*ENGINE_ERRORS):
                client.close()


def _probe(
    settings: Settings, shard: Shard, client: docker.DockerClient, deadline: float
) -> dict[str, Any]:
    require_volume(client, shard)
    with container_start_step(settings, shard, "while creating the probe container"):
        container = client.containers.create(**create_kwargs(settings, probe_container(shard)))
    try:
        return _run_probe(settings, shard, container, deadline)
    finally:
        # force=True kills a probe that is still running (the timeout case).
        with contextlib.suppress(*ENGINE_ERRORS):
            container.remove(force=True)


def _run_probe(settings: Settings, shard: Shard, container: Any, deadline: float) -> dict[str, Any]:
    with container_start_step(settings, shard, "while starting the probe"):
        container.start()
    with engine_step("while waiting for the probe"):
        try:
            outcome = container.wait(timeout=max(0.01, deadline - time.monotonic()))
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            detail = (
                f"the login check did not finish within {settings.preflight_timeout_seconds:g} s "
                f"(limit: {ENV_PREFIX}PREFLIGHT_TIMEOUT_SECONDS)"
            )
            raise _blocked("timeout", detail, Fix.RETRY) from None
    with engine_step("while reading the probe's report"):
        output = container.logs(stdout=True, stderr=False).decode("utf-8", "replace")
    exit_code = outcome.get("StatusCode")
    if exit_code != 0:
        # The probe exits 0 whatever it finds: anything else means the probe itself broke.
        # Its stderr is not quoted: a traceback is no place to risk a credential.
        raise _blocked("probe", f"the probe failed with exit code {exit_code}", Fix.RETRY)
    report = parse_probe_output(output)
    if report is None:
        raise _blocked("probe", "the probe printed no readable report", Fix.RETRY)
    return report
