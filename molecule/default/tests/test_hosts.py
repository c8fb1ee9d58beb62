"""Per worker host: volumes, units, containers, queues (testinfra on the real hosts)."""

from __future__ import annotations

import json

import pytest

testinfra_hosts = ["ansible://codex_workers"]

SHARD_COUNT = 3
JOB_IMAGE = "moonmind-codex/job:latest"


def own_shards(host) -> list[int]:
    return list(host.ansible.get_variables()["moonmind_codex_shards"])


@pytest.mark.parametrize("shard", range(SHARD_COUNT))
def test_each_volume_exists_on_its_owner_only(host, shard: int) -> None:
    inspect = host.run(f"docker volume inspect codex_auth_{shard}")
    if shard in own_shards(host):
        assert inspect.rc == 0, inspect.stderr
        labels = json.loads(inspect.stdout)[0]["Labels"]
        assert labels["io.moonmind.codex.shard"] == str(shard)
        assert labels["io.moonmind.codex.managed-by"] == "moonmind-codex"
    else:
        assert inspect.rc != 0, f"codex_auth_{shard} must not exist on {host.backend.host}"


def test_volume_roots_are_owned_by_the_job_uid_with_mode_0700(host) -> None:
    for shard in own_shards(host):
        out = host.check_output(
            f"docker run --rm --network none --entrypoint stat "
            f"-v codex_auth_{shard}:/c {JOB_IMAGE} -c '%u:%g %a' /c"
        )
        assert out.strip() == "1000:1000 700"


def test_worker_units_enabled_and_active(host) -> None:
    assert host.service("moonmind-codex-workers.target").is_enabled
    for shard in own_shards(host):
        unit = host.service(f"moonmind-codex-worker@{shard}")
        assert unit.is_enabled and unit.is_running
        state = json.loads(
            host.check_output(
                f"docker inspect --format '{{{{json .State}}}}' moonmind-codex-worker-{shard}"
            )
        )
        assert state["Running"] is True
        # systemd owns the lifecycle: no Docker restart policy.
        policy = host.check_output(
            f"docker inspect --format '{{{{.HostConfig.RestartPolicy.Name}}}}' "
            f"moonmind-codex-worker-{shard}"
        )
        assert policy.strip() in ("", "no")
    # The target pulls in this host's shards and no other.
    wants = host.check_output(
        "systemctl show --property=Wants --value moonmind-codex-workers.target"
    )
    assert {u for u in wants.split() if u.startswith("moonmind-codex-worker@")} == {
        f"moonmind-codex-worker@{shard}.service" for shard in own_shards(host)
    }
    # Another host's shard: its unit is real here (the installed template loads it; a misspelt
    # name would read "not-found", and is never running either), yet disabled and not running,
    # and its container does not exist.
    for shard in sorted(set(range(SHARD_COUNT)) - set(own_shards(host))):
        shown = host.check_output(
            "systemctl show --property=LoadState,FragmentPath,ActiveState,UnitFileState "
            f"moonmind-codex-worker@{shard}.service"
        )
        assert dict(line.split("=", 1) for line in shown.splitlines()) == {
            "LoadState": "loaded",
            "FragmentPath": "/etc/systemd/system/moonmind-codex-worker@.service",
            "ActiveState": "inactive",
            "UnitFileState": "disabled",
        }
        assert host.run(f"docker inspect moonmind-codex-worker-{shard}").rc != 0


def test_each_worker_consumes_its_own_queue_only(host) -> None:
    for shard in own_shards(host):
        logs = host.check_output(f"docker logs moonmind-codex-worker-{shard} 2>&1")
        queue_lines = [
            line.strip()
            for line in logs.split("[queues]")[-1].split("[tasks]")[0].splitlines()
            if line.strip().startswith(".>")
        ]
        assert queue_lines, logs[-2000:]
        assert {line.split()[1] for line in queue_lines} == {f"codex-{shard}"}
        assert f"codex-{shard}@{host.backend.host} ready." in logs


def test_broker_secret_is_a_root_only_file_not_an_env_var(host) -> None:
    secret = host.file("/etc/moonmind-codex/broker_url")
    assert secret.mode == 0o400 and secret.uid == 10001
    for shard in own_shards(host):
        env = host.check_output(
            f"docker inspect --format '{{{{json .Config.Env}}}}' moonmind-codex-worker-{shard}"
        )
        assert "amqp://" not in env and "molecule-test-password" not in env
