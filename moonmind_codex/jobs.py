"""Launch one job container per Codex phase, with the shard's auth volume mounted read-write.

The container name is derived from the run and phase, so a redelivered phase (``acks_late``
after a worker died) finds the container of the first delivery and awaits or reaps it instead of
starting a second job on the same login. The one-job-per-volume rule is enforced by a lock inside
the volume, taken by the image's entry point (exit 75 when held).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import docker
import docker.errors
import requests.exceptions
from docker.types import Mount

from moonmind_codex.dockerio import labels
from moonmind_codex.settings import Settings

CODEX_HOME = "/home/app/.codex"
WORKSPACE_MOUNT = "/work"
EXIT_VOLUME_BUSY = 75

Outcome = Literal["succeeded", "failed", "timed_out", "busy"]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class JobSpec:
    run_id: str
    phase: str
    command: Sequence[str]
    shard: int
    queue: str
    volume: str
    timeout_s: float

    def __post_init__(self) -> None:
        for name in ("run_id", "phase"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _ID.match(value):
                raise ValueError(
                    f"{name} {value!r} is not valid: use 1-128 letters, digits, '_', '.' or '-', "
                    "starting with a letter or digit"
                )
        if not self.command or not all(isinstance(a, str) for a in self.command):
            raise ValueError("command must be a non-empty list of strings")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")


@dataclass(frozen=True)
class JobResult:
    container_id: str
    container_name: str
    exit_code: int | None
    outcome: Outcome
    log_path: Path
    duration_s: float
    reused_existing: bool


def _slug(value: str, limit: int) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", value.lower()).strip("-")[:limit] or "x"


def job_container_name(run_id: str, phase: str) -> str:
    """Deterministic container name of a run's phase (readable prefix, collision-proof hash)."""
    digest = hashlib.sha256(f"{run_id}\0{phase}".encode()).hexdigest()[:8]
    return f"mmc-job-{_slug(run_id, 40)}-{_slug(phase, 24)}-{digest}"


def log_path_for(settings: Settings, run_id: str, phase: str) -> Path:
    return settings.artifacts_dir / "spec_workflows" / run_id / f"{phase}.log"


def job_container_config(settings: Settings, spec: JobSpec) -> dict[str, Any]:
    """Arguments for ``containers.create``. No socket, no secrets, no capabilities."""
    return {
        "image": settings.job_image,
        "command": list(spec.command),
        "name": job_container_name(spec.run_id, spec.phase),
        "user": f"{settings.job_uid}:{settings.job_gid}",
        "environment": {
            "HOME": "/home/app",
            "MOONMIND_CODEX_RUN_ID": spec.run_id,
            "MOONMIND_CODEX_PHASE": spec.phase,
        },
        "mounts": [
            Mount(target=CODEX_HOME, source=spec.volume, type="volume", read_only=False),
            Mount(
                target=WORKSPACE_MOUNT,
                source=settings.workspace_volume,
                type="volume",
                read_only=False,
            ),
        ],
        "network_mode": settings.job_network,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "labels": labels(
            role="job",
            run_id=spec.run_id,
            phase=spec.phase,
            shard=spec.shard,
            queue=spec.queue,
            volume=spec.volume,
            host=settings.host_name,
        ),
        "detach": True,
    }


def _stream_logs(container: Any, path: Path) -> threading.Thread:
    """Follow the container's output into ``path`` while it runs."""

    def pump() -> None:
        with path.open("ab") as sink:
            try:
                for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
                    sink.write(chunk)
                    sink.flush()
            except (docker.errors.APIError, requests.exceptions.RequestException):
                pass  # the container went away; whatever was read is kept

    thread = threading.Thread(target=pump, name=f"logs-{container.name}", daemon=True)
    thread.start()
    return thread


def launch_job(settings: Settings, spec: JobSpec, client: docker.DockerClient) -> JobResult:
    """Run ``spec`` in a job container and wait for it; the container is always removed."""
    name = job_container_name(spec.run_id, spec.phase)
    log_path = log_path_for(settings, spec.run_id, spec.phase)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    reused = False
    try:
        container = client.containers.get(name)
        reused = True  # a redelivered phase: await or reap the first delivery's container
    except docker.errors.NotFound:
        try:
            container = client.containers.create(**job_container_config(settings, spec))
        except docker.errors.APIError as exc:
            if exc.status_code != 409:
                raise
            container = client.containers.get(name)  # lost a race with a concurrent delivery
            reused = True
    try:
        container.reload()
        if reused:
            # The log is rewritten: the stream below replays the container's whole output, and
            # the earlier delivery's worker (gone) may have copied part of it here already.
            with log_path.open("w", encoding="utf-8") as sink:
                sink.write(
                    f"[moonmind-codex] container {name} of an earlier delivery of this phase "
                    f"was found ({container.status}): collecting it instead of starting another; "
                    "its complete output follows\n"
                )
        if container.status == "created":
            container.start()
        pump = _stream_logs(container, log_path)
        remaining = max(0.001, spec.timeout_s - (time.monotonic() - started))
        timed_out = False
        try:
            exit_code: int | None = container.wait(timeout=remaining).get("StatusCode")
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            timed_out = True
            exit_code = None
            with contextlib.suppress(docker.errors.APIError):  # it may have just ended
                container.kill()
            # Only to let the log stream end; removal below kills it for good anyway.
            with contextlib.suppress(docker.errors.APIError, requests.exceptions.RequestException):
                container.wait(timeout=30)
        pump.join(timeout=10)
        outcome: Outcome
        if timed_out:
            outcome = "timed_out"
            with log_path.open("a", encoding="utf-8") as sink:
                sink.write(f"\n[moonmind-codex] killed after the {spec.timeout_s:g} s timeout\n")
        elif exit_code == EXIT_VOLUME_BUSY:
            outcome = "busy"
        elif exit_code == 0:
            outcome = "succeeded"
        else:
            outcome = "failed"
        return JobResult(
            container_id=container.id,
            container_name=name,
            exit_code=exit_code,
            outcome=outcome,
            log_path=log_path,
            duration_s=round(time.monotonic() - started, 3),
            reused_existing=reused,
        )
    finally:
        _remove(container)


def _remove(container: Any) -> None:
    """Remove the container; when a concurrent launcher is already at it, see it gone."""
    try:
        container.remove(force=True)
    except docker.errors.APIError as exc:
        if exc.status_code == 404:
            return
        if exc.status_code != 409:  # 409: removal already in progress elsewhere
            raise
        with contextlib.suppress(docker.errors.APIError, requests.exceptions.RequestException):
            container.wait(condition="removed", timeout=30)
