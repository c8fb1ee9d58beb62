"""A canary job image on chosen shards: their jobs run it, the others the fleet's image, and
login-check's version lookup tells them apart (real engine, real images)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from moonmind_codex.core.shard import Shard
from moonmind_codex.engine.jobs import JobSpec, launch_job
from moonmind_codex.engine.preflight import job_image_versions
from moonmind_codex.settings import Settings
from tests.integration.conftest import VolumeFactory, unique

JOB_IMAGE = "moonmind-codex/job:latest"
CANARY_VERSION = "9.9.9-canary"


@pytest.fixture
def canary_image(client: Any) -> Iterator[str]:
    """The job image with another Codex CLI version label (as a canary build would carry)."""
    tag = f"moonmind-codex/job:{unique('canary')}"
    subprocess.run(
        ["docker", "build", "-q", "-t", tag, "-"],
        input=f"FROM {JOB_IMAGE}\nLABEL io.moonmind.codex.codex-version={CANARY_VERSION}\n",
        text=True,
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        yield tag
    finally:
        client.images.remove(tag, force=True)


def test_only_the_canary_shard_runs_the_canary_image_and_login_check_shows_its_cli(
    client: Any, make_volume: VolumeFactory, settings_for: Any, canary_image: str
) -> None:
    volumes = {0: make_volume(), 1: make_volume()}
    settings: Settings = settings_for(
        volumes[0], auth_volume_override=None, shard_job_images={1: canary_image}
    )
    seen: dict[int, str] = {}
    for shard, volume in volumes.items():
        run_id = unique(f"canary-{shard}")
        job = JobSpec(
            run_id=run_id,
            phase="specify",
            command=["true"],
            shard=Shard(number=shard, queue=f"codex-{shard}", volume=volume, host="test-host"),
            timeout_s=60,
        )
        # The engine's own record of which image the job container was created from.
        events = client.events(
            decode=True, filters={"event": "create", "label": f"io.moonmind.codex.run-id={run_id}"}
        )
        try:
            result = launch_job(settings, job, client)
            assert result.outcome == "succeeded", result.log_path.read_text()
            created = next(iter(events))
        finally:
            events.close()
        seen[shard] = created["Actor"]["Attributes"]["image"]
    assert seen == {0: JOB_IMAGE, 1: canary_image}
    assert job_image_versions(settings, [0, 1, 2]) == {
        0: {"job_image": JOB_IMAGE, "codex_version": "0.169.0"},
        1: {"job_image": canary_image, "codex_version": CANARY_VERSION},
        2: {"job_image": JOB_IMAGE, "codex_version": "0.169.0"},
    }
