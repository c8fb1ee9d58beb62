"""The one job-image container factory, checked on the real engine for every role."""

from __future__ import annotations

from typing import Any

import pytest

from moonmind_codex.engine.containers import (
    CODEX_HOME,
    JobImageContainer,
    api_create_config,
    create_kwargs,
)
from moonmind_codex.engine.jobs import JobSpec, job_container
from moonmind_codex.engine.login import device_login_container, repair_container
from moonmind_codex.engine.preflight import probe_container
from moonmind_codex.settings import Settings
from tests.integration.conftest import VolumeFactory, unique

LABEL = "io.moonmind.codex."


def every_role(settings: Settings, volume: str) -> list[JobImageContainer]:
    shard = settings.locate_shard(0)
    job = job_container(
        settings,
        JobSpec(run_id=unique("run"), phase="plan", command=["true"], shard=shard, timeout_s=5),
    )
    move = JobImageContainer(
        role="move", shard=shard, command=["true"], name=unique("move"), keep_logs=False
    )
    return [
        job,
        probe_container(shard),
        device_login_container(shard, settings),
        repair_container(settings, shard),
        move,
    ]


def test_every_role_gets_the_same_hardening_mount_and_labels(
    client: Any, make_volume: VolumeFactory, settings_for: Any
) -> None:
    volume = make_volume()
    settings: Settings = settings_for(volume, job_uid=1000, job_gid=1000, host_name="factory-host")
    for spec in every_role(settings, volume):
        container = client.containers.create(**create_kwargs(settings, spec))
        try:
            attrs = client.api.inspect_container(container.id)
            host = attrs["HostConfig"]
            assert host["CapDrop"] == ["ALL"], spec.role
            assert host["SecurityOpt"] == ["no-new-privileges"], spec.role
            assert host.get("Privileged") is False
            assert not any("docker.sock" in str(m) for m in attrs["Mounts"]), spec.role
            auth = [m for m in attrs["Mounts"] if m["Destination"] == CODEX_HOME]
            assert [(m["Type"], m["Name"], m["RW"]) for m in auth] == [("volume", volume, True)]
            labels = attrs["Config"]["Labels"]
            assert {k: labels[LABEL + k] for k in ("role", "shard", "queue", "volume", "host")} == {
                "role": spec.role,
                "shard": "0",
                "queue": "codex-0",
                "volume": volume,
                "host": "factory-host",
            }
            assert "HOME=/home/app" in attrs["Config"]["Env"]
            # Below the control plane's weight (the engine's default, 1024).
            assert host["CpuShares"] == settings.job_cpu_shares == 256, spec.role
            # Hard limits, as the engine applies them (one runaway job cannot starve the host).
            assert (host["Memory"], host["PidsLimit"]) == (8192 * 2**20, 4096), spec.role
            if spec.role == "repair":
                assert attrs["Config"]["User"] == "0:0"
                assert sorted(host["CapAdd"]) == ["CHOWN", "DAC_OVERRIDE", "FOWNER"]
            else:
                assert attrs["Config"]["User"] == "1000:1000" and not host["CapAdd"]
            expected_network = settings.job_network if spec.role in ("job", "login") else "none"
            assert host["NetworkMode"] == expected_network, spec.role
            # Containers whose standard streams carry a login keep no log.
            assert (host["LogConfig"]["Type"] == "none") is (not spec.keep_logs), spec.role
        finally:
            container.remove(force=True)


@pytest.mark.parametrize("stdin", [True, False])
def test_low_level_rendering_matches_the_high_level_one(
    client: Any, make_volume: VolumeFactory, settings_for: Any, stdin: bool
) -> None:
    volume = make_volume()
    settings: Settings = settings_for(volume)
    shard = settings.locate_shard(0)
    spec = JobImageContainer(
        role="login",
        shard=shard,
        command=["true"],
        name=unique("login"),
        stdin=stdin,
        keep_logs=False,
    )
    created = client.api.create_container_from_config(
        api_create_config(client, settings, spec), spec.name
    )
    try:
        attrs = client.api.inspect_container(created["Id"])
        assert attrs["Config"]["StdinOnce"] is stdin and attrs["Config"]["OpenStdin"] is stdin
        assert attrs["HostConfig"]["CapDrop"] == ["ALL"]
        assert attrs["HostConfig"]["SecurityOpt"] == ["no-new-privileges"]
        assert attrs["HostConfig"]["LogConfig"]["Type"] == "none"
        assert attrs["HostConfig"]["NetworkMode"] == "none"
        assert attrs["Config"]["Labels"][LABEL + "volume"] == volume
        assert attrs["HostConfig"]["CpuShares"] == settings.job_cpu_shares
        assert attrs["HostConfig"]["Memory"] == settings.job_memory_mb * 2**20
        assert attrs["HostConfig"]["PidsLimit"] == settings.job_pids_limit
    finally:
        client.api.remove_container(created["Id"], force=True)
