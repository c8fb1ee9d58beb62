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

import docker.errors
import requests.exceptions
from docker.types import Mount

from moonmind_codex import messages
from moonmind_codex.dockerio import ENGINE_UNREACHABLE, DockerUnavailable, connect, labels
from moonmind_codex.preflight_eval import PreflightResult, blocked_result, evaluate
from moonmind_codex.settings import Settings

CODEX_HOME = "/home/app/.codex"
PROBE_COMMAND = ["moonmind-codex-probe"]


def probe_container_config(settings: Settings, shard: int, volume: str) -> dict[str, Any]:
    """Arguments for ``containers.create``: the job's mount, no network, no privileges."""
    return {
        "image": settings.job_image,
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


def run_preflight(settings: Settings, shard: int, client: Any | None = None) -> PreflightResult:
    """Check shard ``shard``'s login. Raises only for bad input (shard out of range)."""
    volume = settings.volume_for_shard(shard)  # validates the shard first
    host = settings.host_name
    started = time.monotonic()

    def blocked(reason: str, remedy: str, check: str = "infrastructure") -> PreflightResult:
        return blocked_result(
            reason,
            shard=shard,
            volume=volume,
            host=host,
            remediation=remedy,
            duration_s=time.monotonic() - started,
            check_name=check,
        )

    try:
        if client is None:
            client = connect(settings)
        try:
            client.volumes.get(volume)
        except docker.errors.NotFound:
            return blocked(
                f"auth volume {volume} does not exist on host {host}",
                messages.create_volume(shard, volume, host),
                "volume",
            )
        container = client.containers.create(**probe_container_config(settings, shard, volume))
    except DockerUnavailable as exc:
        return blocked(str(exc).split(";")[0], messages.start_docker(host), "docker engine")
    except docker.errors.ImageNotFound:
        return blocked(
            f"job image {settings.job_image} is not on host {host}",
            f"build or load it on {host}: ansible-playbook playbooks/site.yml --limit {host}",
            "job image",
        )
    except docker.errors.APIError as exc:
        # e.g. a volume on a read-only filesystem: a job could not start on it either.
        return blocked(
            f"a job container cannot be created on volume {volume}: {exc.explanation or exc}",
            messages.repair(shard, volume, host),
            "volume mount",
        )
    except ENGINE_UNREACHABLE as exc:
        return blocked(
            f"cannot reach the Docker engine ({type(exc).__name__})",
            messages.start_docker(host),
            "docker engine",
        )

    try:
        try:
            container.start()
        except docker.errors.APIError as exc:
            # e.g. a volume on a read-only filesystem: a job could not start on it either.
            return blocked(
                f"a job container cannot start on volume {volume}: {exc.explanation or exc}",
                messages.repair(shard, volume, host),
                "volume mount",
            )
        try:
            outcome = container.wait(timeout=settings.preflight_timeout_seconds)
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            return blocked(
                f"the login check did not finish within {settings.preflight_timeout_seconds:g} s",
                messages.check_docker_then_retry(shard, host),
                "timeout",
            )
        output = container.logs(stdout=True, stderr=False).decode("utf-8", "replace")
        if outcome.get("StatusCode") != 0:
            return blocked(
                f"the probe failed with exit code {outcome.get('StatusCode')}",
                messages.check_docker_then_retry(shard, host),
                "probe",
            )
        try:
            report = json.loads(output.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return blocked(
                "the probe printed no readable report",
                messages.check_docker_then_retry(shard, host),
                "probe",
            )
        if not isinstance(report, dict):
            return blocked(
                "the probe printed no readable report",
                messages.check_docker_then_retry(shard, host),
                "probe",
            )
        return evaluate(
            report,
            shard=shard,
            volume=volume,
            host=host,
            job_uid=settings.job_uid,
            job_gid=settings.job_gid,
            warn_after_days=settings.last_refresh_warn_days,
            duration_s=time.monotonic() - started,
        )
    except ENGINE_UNREACHABLE as exc:
        return blocked(
            f"lost the Docker engine during the check ({type(exc).__name__})",
            messages.start_docker(host),
            "docker engine",
        )
    finally:
        with contextlib.suppress(*ENGINE_UNREACHABLE):
            container.remove(force=True)
