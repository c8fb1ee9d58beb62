"""Per worker host: volumes, units, containers, queues (testinfra on the real hosts)."""

from __future__ import annotations

import json

import pytest

testinfra_hosts = ["ansible://codex_workers"]

SHARD_COUNT = 3
JOB_IMAGE = "moonmind-codex/job:latest"
CONFIG_DIR = "/etc/moonmind-codex"


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


def test_each_worker_has_its_own_broker_user_over_tls_in_a_file_not_an_env_var(host) -> None:
    """Shard N's worker reads broker-urls/shard-N (user codex-shard-N, amqps, 0400 worker uid);
    the host's CLI reads broker_url (codex-producer); neither is in a container's environment."""
    producer = host.file(f"{CONFIG_DIR}/broker_url")
    assert producer.mode == 0o400 and producer.uid == 10001
    assert producer.content_string.startswith("amqps://codex-producer:")
    for shard in own_shards(host):
        url_file = host.file(f"{CONFIG_DIR}/broker-urls/shard-{shard}")
        assert url_file.mode == 0o400 and url_file.uid == 10001
        url = url_file.content_string
        assert url.startswith(f"amqps://codex-shard-{shard}:") and url.endswith(":5671//")
        env = host.check_output(
            f"docker inspect --format '{{{{json .Config.Env}}}}' moonmind-codex-worker-{shard}"
        )
        assert f"MOONMIND_CODEX_BROKER_URL_FILE={CONFIG_DIR}/broker-urls/shard-{shard}" in env
        assert "amqp" not in env.replace("BROKER_URL_FILE", "")
        password = url.split("//", 1)[1].split("@", 1)[0].split(":", 1)[1]
        assert password not in env
    others = {f"shard-{s}" for s in range(3)} - {f"shard-{s}" for s in own_shards(host)}
    assert not others & set(host.file(f"{CONFIG_DIR}/broker-urls").listdir())


def test_the_signing_key_is_the_worker_uids_alone_and_every_fleet_signer_is_trusted(host) -> None:
    key = host.file(f"{CONFIG_DIR}/signing/signer.key")
    assert key.mode == 0o400 and key.uid == 10001
    trusted = sorted(host.file(f"{CONFIG_DIR}/signing/trusted").listdir())
    assert trusted == ["mmc-molecule-host-a.pem", "mmc-molecule-host-b.pem"]
    # The host's own certificate is among them (its workers send a run's next phase).
    own = host.file(f"{CONFIG_DIR}/signing/signer.crt").content_string
    assert own == host.file(f"{CONFIG_DIR}/signing/trusted/{host.backend.host}.pem").content_string
    fleet_env = host.file(f"{CONFIG_DIR}/fleet.env").content_string
    for line in (
        f"MOONMIND_CODEX_BROKER_CA_PATH={CONFIG_DIR}/tls/ca.crt",
        f"MOONMIND_CODEX_SIGNING_KEY_PATH={CONFIG_DIR}/signing/signer.key",
        f"MOONMIND_CODEX_SIGNING_TRUST_DIR={CONFIG_DIR}/signing/trusted",
        "MOONMIND_CODEX_DECLARE_QUEUES=false",
    ):
        assert line in fleet_env.splitlines()
