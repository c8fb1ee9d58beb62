"""The one factory for job-image containers: jobs, pre-flight probes, logins, repairs, moves.

Every container that mounts a shard's auth volume is described here, once: the job uid, no
capabilities, no new privileges, the volume read-write at :data:`CODEX_HOME`, the project
labels, ``HOME``, a CPU weight below the control plane's (``job_cpu_shares``). Callers say only
what differs (the command, the network, root for a repair, standard input for a login). Three
renderings of one description: keyword arguments for the Docker SDK's ``containers.create``,
the low-level API config (needed for ``StdinOnce``), and a ``docker run`` command line (the
operator's interactive device-code sign-in).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from docker.types import Mount

from moonmind_codex.core.shard import Shard
from moonmind_codex.core.workspace import WORKSPACE_MOUNT
from moonmind_codex.settings import Settings

CODEX_HOME = "/home/app/.codex"
JOB_HOME = "/home/app"
LABEL = "io.moonmind.codex."
NAME_PREFIX = "moonmind-codex-"

Role = Literal["job", "probe", "login", "repair", "move", "workspace"]


def labels(**values: object) -> dict[str, str]:
    """Project labels (``io.moonmind.codex.<key>``), keys with '_' written as '-'."""
    return {LABEL + k.replace("_", "-"): str(v) for k, v in values.items() if v is not None}


def unique_name(role: Role, shard: Shard) -> str:
    """A fresh name for a one-off container (login, repair, move); jobs name themselves."""
    return f"{NAME_PREFIX}{role}-{shard.number}-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class JobImageContainer:
    """What one job-image container on a shard's volume needs; the hardening is not optional."""

    role: Role
    shard: Shard
    command: Sequence[str]
    name: str
    # "none" unless the container must talk to the outside (a job, the device-code sign-in).
    network: str = "none"
    # Only a repair runs as root, and then with just the capabilities chown/chmod need.
    as_root: bool = False
    # Replaces the image's entry point (which takes the volume lock): only the probe, which
    # must report on a volume whatever state its lock is in.
    entrypoint: Sequence[str] | None = None
    # A job's run workspace (the run's own volume), mounted at /work.
    workspace_volume: str | None = None
    # False only for the container that prepares a run's workspace volume: it has no business
    # with the shard's login.
    mount_login: bool = True
    environment: Mapping[str, str] = field(default_factory=dict)
    extra_labels: Mapping[str, object] = field(default_factory=dict)
    # Standard input carries a login (StdinOnce: closing our end is the container's EOF).
    stdin: bool = False
    # False for every container whose standard streams carry a login: the engine's logging
    # driver must not keep a copy (it may be journald or a log shipper).
    keep_logs: bool = True


def _mounts(spec: JobImageContainer) -> list[Mount]:
    # no_copy: while a volume is empty the engine would copy the image's /home/app/.codex onto
    # it, owner included, undoing the job uid the playbook gave the volume root.
    mounts = []
    if spec.mount_login:
        mounts.append(
            Mount(
                target=CODEX_HOME,
                source=spec.shard.volume,
                type="volume",
                read_only=False,
                no_copy=True,
            )
        )
    if spec.workspace_volume is not None:
        mounts.append(
            Mount(
                target=WORKSPACE_MOUNT,
                source=spec.workspace_volume,
                type="volume",
                read_only=False,
                no_copy=True,
            )
        )
    return mounts


def _labels(spec: JobImageContainer) -> dict[str, str]:
    return labels(
        role=spec.role,
        shard=spec.shard.number,
        queue=spec.shard.queue,
        volume=spec.shard.volume if spec.mount_login else None,
        host=spec.shard.host,
        **spec.extra_labels,
    )


def _user(settings: Settings, spec: JobImageContainer) -> str:
    return "0:0" if spec.as_root else f"{settings.job_uid}:{settings.job_gid}"


def _cap_add(spec: JobImageContainer) -> list[str] | None:
    return ["CHOWN", "FOWNER", "DAC_OVERRIDE"] if spec.as_root else None


def _log_config(spec: JobImageContainer) -> dict[str, Any] | None:
    return None if spec.keep_logs else {"type": "none", "config": {}}


def create_kwargs(settings: Settings, spec: JobImageContainer) -> dict[str, Any]:
    """Keyword arguments for ``client.containers.create`` (detached)."""
    kwargs: dict[str, Any] = {
        "image": settings.job_image_for(spec.shard.number),
        "command": list(spec.command),
        "name": spec.name,
        "user": _user(settings, spec),
        "environment": {"HOME": JOB_HOME, **spec.environment},
        "mounts": _mounts(spec),
        "network_mode": spec.network,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "labels": _labels(spec),
        "detach": True,
    }
    kwargs.update(_limits(settings))
    if spec.entrypoint is not None:
        kwargs["entrypoint"] = list(spec.entrypoint)
    if spec.as_root:
        kwargs["cap_add"] = _cap_add(spec)
    if not spec.keep_logs:
        kwargs["log_config"] = _log_config(spec)
    if spec.stdin:
        kwargs["stdin_open"] = True
    return kwargs


# The same limits as `docker run` flags.
_LIMIT_FLAGS = {
    "cpu_shares": "--cpu-shares",
    "mem_limit": "--memory",
    "pids_limit": "--pids-limit",
    "nano_cpus": "--cpus",
    "cpuset_cpus": "--cpuset-cpus",
}


def _limits(settings: Settings) -> dict[str, Any]:
    """CPU weight and hard limits of a job-image container; a 0 setting leaves the engine's."""
    limits: dict[str, Any] = {}
    if settings.job_cpu_shares:
        limits["cpu_shares"] = settings.job_cpu_shares
    if settings.job_memory_mb:
        limits["mem_limit"] = f"{settings.job_memory_mb}m"
    if settings.job_pids_limit:
        limits["pids_limit"] = settings.job_pids_limit
    if settings.job_cpus:
        limits["nano_cpus"] = round(settings.job_cpus * 1e9)
    if settings.job_cpuset:
        limits["cpuset_cpus"] = settings.job_cpuset
    return limits


def api_create_config(client: Any, settings: Settings, spec: JobImageContainer) -> dict[str, Any]:
    """The same container as a low-level ``create_container`` config, with ``StdinOnce``.

    The SDK's high-level ``create`` cannot set StdinOnce; without it the container's stdin
    stays open after we close ours, and ``cat`` never sees the end of a login.
    """
    host_config = client.api.create_host_config(
        mounts=_mounts(spec),
        network_mode=spec.network,
        cap_drop=["ALL"],
        cap_add=_cap_add(spec),
        security_opt=["no-new-privileges"],
        log_config=_log_config(spec),
        **_limits(settings),
    )
    config: dict[str, Any] = client.api.create_container_config(
        settings.job_image_for(spec.shard.number),
        list(spec.command),
        user=_user(settings, spec),
        environment={"HOME": JOB_HOME, **spec.environment},
        labels=_labels(spec),
        stdin_open=spec.stdin,
        entrypoint=list(spec.entrypoint) if spec.entrypoint is not None else None,
        host_config=host_config,
    )
    config["StdinOnce"] = spec.stdin
    return config


def docker_run_argv(
    settings: Settings, spec: JobImageContainer, *, interactive: bool = False
) -> list[str]:
    """``docker run --rm`` of the same container (no secret in it), for a terminal session."""
    args = ["docker"]
    if settings.docker_url:
        args += ["--host", settings.docker_url]
    args += ["run", "--rm", "--name", spec.name]
    if interactive:
        args.append("-it")
    args += ["--user", _user(settings, spec), "--env", f"HOME={JOB_HOME}"]
    for key, value in spec.environment.items():
        args += ["--env", f"{key}={value}"]
    args += ["--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
    args += _limit_flags(settings)
    for cap in _cap_add(spec) or ():
        args += ["--cap-add", cap]
    if not spec.keep_logs:
        args += ["--log-driver", "none"]
    args += ["--network", spec.network]
    args += _mount_flags(spec)
    for key, value in _labels(spec).items():
        args += ["--label", f"{key}={value}"]
    if spec.entrypoint is not None:
        args += ["--entrypoint", spec.entrypoint[0]]
    args.append(settings.job_image_for(spec.shard.number))
    if spec.entrypoint is not None:
        args += list(spec.entrypoint[1:])
    return [*args, *spec.command]


def _limit_flags(settings: Settings) -> list[str]:
    """The job's resource limits as ``docker run`` flags (what the SDK call sets)."""
    limits = _limits(settings)
    flags: list[str] = []
    for key, flag in _LIMIT_FLAGS.items():
        if key in limits:
            value = limits[key]
            flags += [flag, f"{value / 1e9:g}" if key == "nano_cpus" else str(value)]
    return flags


def _mount_flags(spec: JobImageContainer) -> list[str]:
    flags: list[str] = []
    for mount in _mounts(spec):
        nocopy = ",volume-nocopy" if mount["VolumeOptions"].get("NoCopy") else ""
        flags += [
            "--mount",
            f"type=volume,source={mount['Source']},target={mount['Target']}{nocopy}",
        ]
    return flags
