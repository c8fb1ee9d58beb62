"""The operators' stand-alone pre-flight: a probe container per shard (``moonmind-codex
preflight``, ``login-check``, the playbooks, the worker's start-up), judged as a job's gate is
(``preflight_eval``), with what the run store holds against each login.

The probe container mounts the shard's auth volume exactly as a job does (read-write at
``/home/app/.codex``, as the job uid) so it sees what the job will see; it takes no lock and
runs no command. Infrastructure failures (engine down, volume missing, timeout, a broken
probe) never raise: they block with the reason, because a check that cannot run must not let
the phase through.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
import docker.errors
import requests.exceptions

from moonmind_codex.core.messages import Fix
from moonmind_codex.core.preflight_eval import (
    Finding,
    LoginPolicy,
    PreflightResult,
    blocked_result,
    evaluate,
)
from moonmind_codex.core.shard import Shard
from moonmind_codex.engine.client import ENGINE_ERRORS, DockerUnavailable, connect
from moonmind_codex.engine.containers import LABEL, JobImageContainer, create_kwargs, unique_name
from moonmind_codex.engine.job_gate import (
    PreflightBlocked,
    blocked_by,
    container_start_step,
    engine_step,
    parse_probe_output,
    require_volume,
)
from moonmind_codex.gate.check import (
    quarantine,
)
from moonmind_codex.settings import ENV_PREFIX, Settings

__all__ = [
    "PreflightBlocked",
    "PreflightResult",
    "probe_container",
    "run_preflight",
    "run_preflights",
]


PROBE_COMMAND = ("moonmind-codex-probe",)


def probe_container(shard: Shard) -> JobImageContainer:
    """The job's mount, no network; the probe replaces the entry point so it takes no lock."""
    return JobImageContainer(
        role="probe",
        shard=shard,
        command=[],
        name=unique_name("probe", shard),
        entrypoint=PROBE_COMMAND,
    )


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
        report = probe(settings, shard, client, started + settings.preflight_timeout_seconds)
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


def probe(
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
            raise blocked_by("timeout", detail, Fix.RETRY) from None
    with engine_step("while reading the probe's report"):
        output = container.logs(stdout=True, stderr=False).decode("utf-8", "replace")
    exit_code = outcome.get("StatusCode")
    if exit_code != 0:
        # The probe exits 0 whatever it finds: anything else means the probe itself broke.
        # Its stderr is not quoted: a traceback is no place to risk a credential.
        raise blocked_by("probe", f"the probe failed with exit code {exit_code}", Fix.RETRY)
    report = parse_probe_output(output)
    if report is None:
        raise blocked_by("probe", "the probe printed no readable report", Fix.RETRY)
    return report
