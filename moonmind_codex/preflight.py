"""Run the pre-flight login check: the probe in a short-lived job-image container.

The probe container mounts the shard's auth volume exactly as a job does (read-write at
``/home/app/.codex``, as the job uid) so it sees what the job will see. Infrastructure failures
(engine down, volume missing, timeout, a broken probe) never raise: they block the phase with
the reason, because a check that cannot run must not let the phase through.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
import docker.errors
import requests.exceptions

from moonmind_codex.containers import JobImageContainer, create_kwargs, unique_name
from moonmind_codex.dockerio import ENGINE_ERRORS, DockerUnavailable, connect
from moonmind_codex.messages import Fix
from moonmind_codex.preflight_eval import (
    Finding,
    LoginPolicy,
    PreflightResult,
    blocked_result,
    evaluate,
)
from moonmind_codex.probe import PROBE_VERSION
from moonmind_codex.settings import ENV_PREFIX, Settings, Shard

__all__ = ["PreflightResult", "probe_container", "run_preflight", "run_preflights"]

PROBE_COMMAND = ("moonmind-codex-probe",)
# Sections every probe report has (docs/internals.md); anything else is not the probe talking.
_REPORT_SECTIONS = ("dir", "auth_file", "codex_status")


class _Blocked(Exception):
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
def _engine_step(during: str) -> Iterator[None]:
    """The one place where a lost engine becomes a blocked check."""
    try:
        yield
    except _Blocked:
        raise
    except ENGINE_ERRORS as exc:
        detail = f"lost the Docker engine {during} ({type(exc).__name__})"
        raise _Blocked(Finding("docker engine", "blocked", detail, Fix.START_DOCKER)) from exc


def _blocked(name: str, detail: str, fix: Fix) -> _Blocked:
    return _Blocked(Finding(name, "blocked", detail, fix))


def run_preflight(
    settings: Settings, shard_number: int, client: docker.DockerClient | None = None
) -> PreflightResult:
    """Check shard ``shard_number``'s login. Raises only for bad input (shard out of range)."""
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
    except _Blocked as blocked:
        return blocked_result(shard, blocked.finding, time.monotonic() - started)
    finally:
        if own_client and client is not None:
            with contextlib.suppress(*ENGINE_ERRORS):
                client.close()
    policy = LoginPolicy(job_uid=settings.job_uid, warn_after_days=settings.last_refresh_warn_days)
    return evaluate(report, shard, policy, time.monotonic() - started)


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
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(len(shard_numbers), 8))) as pool:
            return list(pool.map(lambda n: run_preflight(settings, n, client), shard_numbers))
    finally:
        if own_client:
            with contextlib.suppress(*ENGINE_ERRORS):
                client.close()


def _probe(
    settings: Settings, shard: Shard, client: docker.DockerClient, deadline: float
) -> dict[str, Any]:
    with _engine_step("while looking up the volume"):
        try:
            client.volumes.get(shard.volume)
        except docker.errors.NotFound:
            # Never created here: an empty stand-in would pass as "not logged in" and hide the
            # real problem (a host without its shard's volume).
            detail = f"auth volume {shard.volume} does not exist on host {shard.host}"
            raise _blocked("volume", detail, Fix.CREATE_VOLUME) from None
    with _engine_step("while creating the probe container"):
        try:
            container = client.containers.create(**create_kwargs(settings, probe_container(shard)))
        except docker.errors.ImageNotFound:
            detail = f"job image {settings.job_image} is not on host {shard.host}"
            raise _blocked("job image", detail, Fix.LOAD_IMAGE) from None
        except docker.errors.APIError as exc:
            detail = (
                f"a job container cannot be created on volume {shard.volume}: "
                f"{exc.explanation or exc}"
            )
            raise _blocked("volume mount", detail, Fix.CHECK_VOLUME) from None
    try:
        return _run_probe(settings, shard, container, deadline)
    finally:
        # force=True kills a probe that is still running (the timeout case).
        with contextlib.suppress(*ENGINE_ERRORS):
            container.remove(force=True)


def _run_probe(settings: Settings, shard: Shard, container: Any, deadline: float) -> dict[str, Any]:
    with _engine_step("while starting the probe"):
        try:
            container.start()
        except docker.errors.APIError as exc:
            # e.g. a volume on a read-only filesystem: a job could not start on it either.
            detail = (
                f"a job container cannot start on volume {shard.volume}: {exc.explanation or exc}"
            )
            raise _blocked("volume mount", detail, Fix.CHECK_VOLUME) from None
    with _engine_step("while waiting for the probe"):
        try:
            outcome = container.wait(timeout=max(0.01, deadline - time.monotonic()))
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            detail = (
                f"the login check did not finish within {settings.preflight_timeout_seconds:g} s "
                f"(limit: {ENV_PREFIX}PREFLIGHT_TIMEOUT_SECONDS)"
            )
            raise _blocked("timeout", detail, Fix.RETRY) from None
    with _engine_step("while reading the probe's report"):
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
