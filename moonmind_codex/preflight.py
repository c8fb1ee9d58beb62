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
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker.types import Mount

from moonmind_codex import messages
from moonmind_codex.dockerio import ENGINE_ERRORS, DockerUnavailable, connect, labels
from moonmind_codex.preflight_eval import PreflightResult, blocked_result, evaluate
from moonmind_codex.probe import PROBE_VERSION
from moonmind_codex.settings import ENV_PREFIX, Settings

__all__ = ["CODEX_HOME", "PreflightResult", "probe_container_config", "run_preflight"]

CODEX_HOME = "/home/app/.codex"
PROBE_COMMAND = ["moonmind-codex-probe"]
# Sections every probe report has (docs/internals.md); anything else is not the probe talking.
_REPORT_SECTIONS = ("dir", "auth_file", "codex_status")


def probe_container_config(settings: Settings, shard: int, volume: str) -> dict[str, Any]:
    """Arguments for ``containers.create``: the job's mount, no network, no privileges."""
    return {
        "image": settings.job_image,
        # Overridden so the probe does not take the job lock: it only reads, and must be able
        # to report on a volume whatever state its lock file is in.
        "entrypoint": PROBE_COMMAND,
        "command": [],
        "user": f"{settings.job_uid}:{settings.job_gid}",
        "environment": {"HOME": "/home/app"},
        "mounts": [Mount(target=CODEX_HOME, source=volume, type="volume", read_only=False)],
        "network_mode": "none",
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "labels": labels(role="probe", shard=shard, volume=volume, host=settings.host_name),
        "detach": True,
    }


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


class _Check:
    """One pre-flight run: its identity, clock and the way it ends when it cannot judge."""

    def __init__(self, settings: Settings, shard: int, volume: str) -> None:
        self.settings = settings
        self.shard = shard
        self.volume = volume
        self.host = settings.host_name
        self.started = time.monotonic()
        self.deadline = self.started + settings.preflight_timeout_seconds

    def blocked(self, reason: str, remedy: str, check: str) -> PreflightResult:
        return blocked_result(
            reason,
            shard=self.shard,
            volume=self.volume,
            host=self.host,
            remediation=remedy,
            duration_s=time.monotonic() - self.started,
            check_name=check,
        )

    def engine_down(self, exc: BaseException, during: str) -> PreflightResult:
        return self.blocked(
            f"lost the Docker engine {during} ({type(exc).__name__})",
            messages.start_docker(self.host),
            "docker engine",
        )

    def unusable_volume(self) -> str:
        # Owner and modes cannot be the cause (the engine refused before any uid touched it):
        # the volume's filesystem or driver options are.
        return (
            f"on host {self.host}, volume {self.volume} must be a writable local volume: check "
            f"`docker volume inspect {self.volume}` (driver, options such as 'ro'); if it is "
            f"wrong, remove it (docker volume rm {self.volume}), recreate it with "
            f"ansible-playbook playbooks/site.yml --limit {self.host} and sign it in: "
            f"{messages.login_command(self.shard)}"
        )

    def retry(self) -> str:
        return messages.check_docker_then_retry(self.shard, self.host)


def run_preflight(
    settings: Settings, shard: int, client: docker.DockerClient | None = None
) -> PreflightResult:
    """Check shard ``shard``'s login. Raises only for bad input (shard out of range)."""
    volume = settings.volume_for_shard(shard)  # validates the shard before anything runs
    run = _Check(settings, shard, volume)
    own_client = client is None
    try:
        if client is None:
            client = connect(settings)
        return _probe(run, client)
    except DockerUnavailable as exc:
        # Its first sentence names the engine address; the remedy is the separate field.
        return run.blocked(str(exc).split(";")[0], messages.start_docker(run.host), "docker engine")
    finally:
        if own_client and client is not None:
            with contextlib.suppress(*ENGINE_ERRORS):
                client.close()


def _probe(run: _Check, client: docker.DockerClient) -> PreflightResult:
    settings, volume, host = run.settings, run.volume, run.host
    try:
        client.volumes.get(volume)
    except docker.errors.NotFound:
        # Never created here: an empty stand-in would pass as "not logged in" and hide the
        # real problem (a host without its shard's volume).
        return run.blocked(
            f"auth volume {volume} does not exist on host {host}",
            messages.create_volume(run.shard, volume, host),
            "volume",
        )
    except ENGINE_ERRORS as exc:
        return run.engine_down(exc, "while looking up the volume")
    try:
        container = client.containers.create(**probe_container_config(settings, run.shard, volume))
    except docker.errors.ImageNotFound:
        return run.blocked(
            f"job image {settings.job_image} is not on host {host}",
            f"build or load it on {host}: scripts/setup.sh on a development machine, or "
            f"ansible-playbook playbooks/site.yml --limit {host}",
            "job image",
        )
    except docker.errors.APIError as exc:
        return run.blocked(
            f"a job container cannot be created on volume {volume}: {exc.explanation or exc}",
            run.unusable_volume(),
            "volume mount",
        )
    except ENGINE_ERRORS as exc:
        return run.engine_down(exc, "while creating the probe container")
    try:
        return _run_container(run, container)
    finally:
        # force=True kills a probe that is still running (the timeout case).
        with contextlib.suppress(*ENGINE_ERRORS):
            container.remove(force=True)


def _run_container(run: _Check, container: Any) -> PreflightResult:
    settings, volume = run.settings, run.volume
    try:
        container.start()
    except docker.errors.APIError as exc:
        # e.g. a volume on a read-only filesystem: a job could not start on it either.
        return run.blocked(
            f"a job container cannot start on volume {volume}: {exc.explanation or exc}",
            run.unusable_volume(),
            "volume mount",
        )
    except ENGINE_ERRORS as exc:
        return run.engine_down(exc, "while starting the probe")
    try:
        outcome = container.wait(timeout=max(0.01, run.deadline - time.monotonic()))
    except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
        return run.blocked(
            f"the login check did not finish within {settings.preflight_timeout_seconds:g} s "
            f"(limit: {ENV_PREFIX}PREFLIGHT_TIMEOUT_SECONDS)",
            run.retry(),
            "timeout",
        )
    except ENGINE_ERRORS as exc:
        return run.engine_down(exc, "while waiting for the probe")
    try:
        output = container.logs(stdout=True, stderr=False).decode("utf-8", "replace")
    except ENGINE_ERRORS as exc:
        return run.engine_down(exc, "while reading the probe's report")
    exit_code = outcome.get("StatusCode")
    if exit_code != 0:
        # The probe exits 0 whatever it finds: anything else means the probe itself broke.
        # Its stderr is not quoted: a traceback is no place to risk a credential.
        return run.blocked(f"the probe failed with exit code {exit_code}", run.retry(), "probe")
    report = parse_probe_output(output)
    if report is None:
        return run.blocked("the probe printed no readable report", run.retry(), "probe")
    return evaluate(
        report,
        shard=run.shard,
        volume=volume,
        host=run.host,
        job_uid=settings.job_uid,
        job_gid=settings.job_gid,
        warn_after_days=settings.last_refresh_warn_days,
        duration_s=time.monotonic() - run.started,
    )
