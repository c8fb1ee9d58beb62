"""A run's workspace volume on the engine: made ready before its first job, removed after it.

The worker calls :func:`ensure_run_volume` before it creates a job container: the volume
``<prefix><run_id>`` is created when missing, labelled with its run, and its root is given to
the job uid by a short root container (``chown``/``chmod`` of that one directory, no login
mounted). That container runs once per run and worker process, and again after a restart
(it is idempotent), so a worker that died between creating and preparing a volume heals it.

:func:`prune_run_volumes` (``moonmind-codex runs prune-workspaces``) removes the volumes of
runs that finished before a cutoff; a pending, running or unknown run's volume, and any volume
a container still uses, is kept.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import docker
import docker.errors

from moonmind_codex.core.shard import Shard
from moonmind_codex.core.states import RUN_FINAL_STATES
from moonmind_codex.core.workspace import (
    ROLE,
    WORKSPACE_MOUNT,
    keep_reason,
    run_of_volume,
    run_volume_name,
)
from moonmind_codex.engine.containers import (
    LABEL,
    JobImageContainer,
    create_kwargs,
    labels,
    unique_name,
)
from moonmind_codex.settings import Settings
from moonmind_codex.store.models import aware_or_none
from moonmind_codex.store.runstore import RunStore

PREPARE_TIMEOUT_S = 120
# Volumes this process has prepared (names), so later phases of a run skip the root container.
_PREPARED: set[str] = set()
_PREPARED_MAX = 4096
_LOCK = threading.Lock()


class WorkspaceError(RuntimeError):
    """A run's workspace volume could not be made ready; the message says why."""


def volume_labels(settings: Settings, run_id: str) -> dict[str, str]:
    return labels(role=ROLE, run_id=run_id, host=settings.host_name)


def ensure_run_volume(
    client: docker.DockerClient, settings: Settings, shard: Shard, run_id: str
) -> str:
    """The run's workspace volume, existing and owned by the job uid; its name."""
    name = run_volume_name(settings.workspace_volume_prefix, run_id)
    try:
        volume = client.volumes.get(name)
    except docker.errors.NotFound:
        # Idempotent on the engine: a concurrent delivery creating it too gets the same volume.
        volume = client.volumes.create(
            name=name, driver="local", labels=volume_labels(settings, run_id)
        )
        with _LOCK:
            _PREPARED.discard(name)
    found = (volume.attrs.get("Labels") or {}).get(f"{LABEL}run-id")
    if found != run_id:
        raise WorkspaceError(
            f"volume {name} exists but is not run {run_id}'s workspace (label "
            f"{LABEL}run-id is {found!r}); it was not made by moonmind-codex: rename the run "
            f"or remove the volume (docker volume rm {name}) if it holds nothing of value"
        )
    with _LOCK:
        if name in _PREPARED:
            return name
    _prepare(client, settings, shard, name, run_id)
    with _LOCK:
        if len(_PREPARED) >= _PREPARED_MAX:
            _PREPARED.clear()
        _PREPARED.add(name)
    return name


def prepare_container(
    settings: Settings, shard: Shard, name: str, run_id: str
) -> JobImageContainer:
    """The root container that gives volume ``name``'s root (only the root) to the job uid.

    Root with only chown/chmod's capabilities, no network, no login mounted, nothing run from
    the volume: it changes one directory's owner and mode.
    """
    owner = f"{settings.job_uid}:{settings.job_gid}"
    return JobImageContainer(
        role="workspace",
        shard=shard,
        command=[],
        name=unique_name("workspace", shard),
        as_root=True,
        entrypoint=[
            "sh",
            "-c",
            f"chown {owner} {WORKSPACE_MOUNT} && chmod 0755 {WORKSPACE_MOUNT}",
        ],
        workspace_volume=name,
        mount_login=False,
        extra_labels={"run_id": run_id},
    )


def _prepare(
    client: docker.DockerClient, settings: Settings, shard: Shard, name: str, run_id: str
) -> None:
    """Give the volume's root to the job uid, mode 0755; raises when that fails."""
    container = client.containers.create(
        **create_kwargs(settings, prepare_container(settings, shard, name, run_id))
    )
    try:
        container.start()
        code = container.wait(timeout=PREPARE_TIMEOUT_S).get("StatusCode")
        if code != 0:
            output = container.logs(stdout=True, stderr=True).decode("utf-8", "replace").strip()
            raise WorkspaceError(
                f"could not give workspace volume {name} to the job uid "
                f"{settings.job_uid}:{settings.job_gid} "
                f"(exit {code}: {output or 'no output'})"
            )
    finally:
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True)


@dataclass(frozen=True)
class PruneDecision:
    volume: str
    run_id: str
    status: str | None
    removed: bool
    # Why it stays (None when removed, or when a dry run would remove it).
    kept_because: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "volume": self.volume,
            "run_id": self.run_id,
            "status": self.status,
            "removed": self.removed,
            "kept_because": self.kept_because,
        }


def prune_run_volumes(
    client: docker.DockerClient,
    settings: Settings,
    store: RunStore,
    cutoff: datetime,
    *,
    dry_run: bool = False,
) -> list[PruneDecision]:
    """Remove the workspace volumes of runs that finished before ``cutoff`` (this engine's).

    Only volumes this fleet made (its prefix, the workspace role and a matching run label) are
    considered. A volume a container still mounts is kept (the engine refuses), and so is one
    of a run that is not finished.
    """
    decisions = []
    listed = client.volumes.list(filters={"label": f"{LABEL}role={ROLE}"})
    for volume in sorted(listed, key=lambda v: v.name):
        run_id = run_of_volume(settings.workspace_volume_prefix, volume.name)
        if run_id is None or (volume.attrs.get("Labels") or {}).get(f"{LABEL}run-id") != run_id:
            continue  # another fleet's prefix, or not a run's workspace
        record = store.get_run(run_id)
        status = None if record is None else record.status
        reason = keep_reason(
            status,
            status in RUN_FINAL_STATES,
            aware_or_none(None if record is None else record.finished_at),
            cutoff,
        )
        removed = False
        if reason is None and not dry_run:
            try:
                volume.remove()
                removed = True
            except docker.errors.NotFound:
                removed = True  # removed meanwhile
            except docker.errors.APIError as exc:
                if exc.status_code != 409:
                    raise
                reason = "a container still uses it"
        if removed:
            with _LOCK:
                _PREPARED.discard(volume.name)
        decisions.append(PruneDecision(volume.name, run_id, status, removed, reason))
    return decisions
