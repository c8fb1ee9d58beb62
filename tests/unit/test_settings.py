from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from moonmind_codex.settings import Settings, SettingsError, load_settings


def test_defaults() -> None:
    s = load_settings({})
    assert (s.shard_count, s.queue_mode, s.default_queue, s.shard) == (3, "sharded", "celery", None)
    assert s.queue_for_shard(2) == "codex-2"
    assert s.volume_for_shard(2) == "codex_auth_2"


def test_full_environment() -> None:
    s = load_settings(
        {
            "MOONMIND_CODEX_SHARD": "4",
            "MOONMIND_CODEX_SHARD_COUNT": "5",
            "MOONMIND_CODEX_QUEUE_MODE": "single",
            "MOONMIND_CODEX_JOB_TIMEOUT_SECONDS": "90",
            "MOONMIND_CODEX_CODEX_TASK_PATTERNS": "a.*, b.codex_*",
            "MOONMIND_CODEX_AUDIT_LOG": "/tmp/a.jsonl",
        }
    )
    assert s.served_shard.number == 4
    assert s.queue_for_shard(4) == "codex"
    assert s.job_timeout_seconds == 90.0
    assert s.codex_task_patterns == ("a.*", "b.codex_*")
    assert s.audit_log == Path("/tmp/a.jsonl")


def test_secret_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "url"
    secret.write_text("amqp://u:p@h:5672//\n")
    s = load_settings({"MOONMIND_CODEX_BROKER_URL_FILE": str(secret)})
    assert s.broker_url == "amqp://u:p@h:5672//"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MOONMIND_CODEX_SHARD_COUNT": "three"}, "SHARD_COUNT='three' is not a whole number"),
        ({"MOONMIND_CODEX_SHARD_COUNT": "0"}, "must be >= 1"),
        ({"MOONMIND_CODEX_SHARD": "3"}, "SHARD=3 is out of range for MOONMIND_CODEX_SHARD_COUNT=3"),
        ({"MOONMIND_CODEX_SHARD": "x"}, "SHARD='x' is not a whole number"),
        ({"MOONMIND_CODEX_QUEUE_MODE": "round-robin"}, "use 'sharded'"),
        ({"MOONMIND_CODEX_SHRAD": "1"}, "MOONMIND_CODEX_SHRAD is not a moonmind-codex setting"),
        ({"MOONMIND_CODEX_AUTH_VOLUME_TEMPLATE": "codex_auth"}, "must contain '{shard}'"),
        ({"MOONMIND_CODEX_AUTH_VOLUME_TEMPLATE": "bad name {shard}"}, "valid Docker volume name"),
        ({"MOONMIND_CODEX_QUEUE_PREFIX": "celery"}, "must not share the default queue"),
        ({"MOONMIND_CODEX_BROKER_URL": "localhost:5672"}, "does not look like a broker URL"),
        ({"MOONMIND_CODEX_JOB_TIMEOUT_SECONDS": "-1"}, "must be > 0"),
        (
            {"MOONMIND_CODEX_BROKER_URL": "amqp://a", "MOONMIND_CODEX_BROKER_URL_FILE": "/x"},
            "not both",
        ),
        ({"MOONMIND_CODEX_BROKER_URL_FILE": "/nonexistent/url"}, "cannot be read"),
        ({"MOONMIND_CODEX_CODEX_TASK_PATTERNS": " , "}, "is empty"),
        ({"MOONMIND_CODEX_JOB_CPU_SHARES": "low"}, "JOB_CPU_SHARES='low' is not a whole number"),
        ({"MOONMIND_CODEX_JOB_CPU_SHARES": "-1"}, "JOB_CPU_SHARES=-1 must be >= 0"),
        ({"MOONMIND_CODEX_JOB_CPU_SHARES": "1"}, "JOB_CPU_SHARES=1 is out of range: use 2..262144"),
        ({"MOONMIND_CODEX_JOB_CPU_SHARES": "262145"}, "JOB_CPU_SHARES=262145 is out of range"),
        ({"MOONMIND_CODEX_JOB_MEMORY_MB": "100"}, "JOB_MEMORY_MB=100 is too small"),
        ({"MOONMIND_CODEX_JOB_PIDS_LIMIT": "10"}, "JOB_PIDS_LIMIT=10 is too small"),
        ({"MOONMIND_CODEX_JOB_CPUS": "2000"}, "JOB_CPUS=2000 is out of range: use 0.1..1024"),
        ({"MOONMIND_CODEX_JOB_CPUS": "0.01"}, "JOB_CPUS=0.01 is out of range"),
        ({"MOONMIND_CODEX_JOB_CPUS": "-1"}, "JOB_CPUS=-1.0 must be > -1"),
        ({"MOONMIND_CODEX_JOB_CPUS": "-0.5"}, "JOB_CPUS=-0.5 is out of range"),
    ],
)
def test_bad_settings_name_the_variable_and_fix(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=None) as caught:
        load_settings(env)
    assert message in str(caught.value)


def test_broker_url_is_never_echoed_in_errors() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"MOONMIND_CODEX_BROKER_URL": "localhost:5672/secret-password"})
    assert "secret-password" not in str(caught.value)


def test_shard_checks() -> None:
    s = Settings(shard_count=2)
    with pytest.raises(SettingsError, match="out of range"):
        s.queue_for_shard(2)
    with pytest.raises(SettingsError, match="integer"):
        s.check_shard(True)  # type: ignore[arg-type]
    with pytest.raises(SettingsError, match="SHARD is not set"):
        _ = s.served_shard
    with pytest.raises(SettingsError, match="out of range"):
        s.with_overrides(shard=5)


def test_non_runtime_variables_are_accepted() -> None:
    # Read by setup.sh and the images, not the runtime: accepted, and they change no setting.
    build_only = {"MOONMIND_CODEX_EXTRA_CA_DIR": "/x", "MOONMIND_CODEX_BASE_IMAGE": "d"}
    assert load_settings(build_only) == load_settings({})
    # Accepted by name, not by switching the typo check off: a near miss beside them is refused.
    with pytest.raises(SettingsError, match="MOONMIND_CODEX_BASE_IMAGES is not a moonmind-codex"):
        load_settings({**build_only, "MOONMIND_CODEX_BASE_IMAGES": "d"})


def test_own_container_id_from_mountinfo(tmp_path: Path) -> None:
    from moonmind_codex.worker.guards import own_container_id

    cid = "a" * 64
    info = tmp_path / "mountinfo"
    info.write_text(f"1 2 0:1 /var/lib/docker/containers/{cid}/hostname /etc/hostname rw\n")
    assert own_container_id(info) == cid
    info.write_text("1 2 0:1 / / rw\n")
    assert own_container_id(info) is None
    assert own_container_id(tmp_path / "missing") is None


def _env_name(field_name: str) -> str:
    # The fingerprint key is only ever a file: its setting is the _FILE twin's path.
    special = {"auth_volume_override": "AUTH_VOLUME", "fingerprint_key_file": "FINGERPRINT_KEY"}
    return special.get(field_name, field_name.upper())


def test_every_setting_is_documented_and_every_documented_one_exists() -> None:
    import re

    doc = (Path(__file__).resolve().parents[2] / "docs" / "settings.md").read_text()
    documented = set(re.findall(r"`MOONMIND_CODEX_([A-Z_]+?)(?:_FILE)?`", doc))
    fields = {_env_name(name) for name in Settings.__dataclass_fields__}
    assert fields - documented == set(), "add these to docs/settings.md"
    # Everything the page names must be accepted by load_settings (no stale entries).
    for name in sorted(documented):
        try:
            load_settings({f"MOONMIND_CODEX_{name}": "x"})
        except SettingsError as exc:
            assert "is not a moonmind-codex setting" not in str(exc), name


def test_the_fingerprint_key_is_a_file_path_and_failover_a_switch() -> None:
    s = load_settings({})
    assert (s.fingerprint_key_file, s.failover) == (None, False)
    s = load_settings(
        {
            "MOONMIND_CODEX_FINGERPRINT_KEY_FILE": "/etc/moonmind-codex/fingerprint_key",
            "MOONMIND_CODEX_FAILOVER": "true",
        }
    )
    assert s.fingerprint_key_file == Path("/etc/moonmind-codex/fingerprint_key")
    assert s.failover is True
    assert load_settings({"MOONMIND_CODEX_FINGERPRINT_KEY_FILE": " "}).fingerprint_key_file is None
    with pytest.raises(SettingsError, match="FINGERPRINT_KEY_FILE='key' must be an absolute path"):
        load_settings({"MOONMIND_CODEX_FINGERPRINT_KEY_FILE": "key"})
    with pytest.raises(SettingsError, match="FINGERPRINT_KEY is not read: put the key in a file"):
        load_settings({"MOONMIND_CODEX_FINGERPRINT_KEY": "secret"})
    with pytest.raises(SettingsError, match="FAILOVER='maybe' is not a yes/no value"):
        load_settings({"MOONMIND_CODEX_FAILOVER": "maybe"})


def test_busy_retry_settings() -> None:
    s = load_settings(
        {"MOONMIND_CODEX_BUSY_RETRY_SECONDS": "2.5", "MOONMIND_CODEX_BUSY_MAX_RETRIES": "0"}
    )
    assert (s.busy_retry_seconds, s.busy_max_retries) == (2.5, 0)
    with pytest.raises(SettingsError, match=r"BUSY_RETRY_SECONDS=0\.0 must be > 0"):
        load_settings({"MOONMIND_CODEX_BUSY_RETRY_SECONDS": "0"})
    with pytest.raises(SettingsError, match="BUSY_MAX_RETRIES=-1 must be >= 0"):
        load_settings({"MOONMIND_CODEX_BUSY_MAX_RETRIES": "-1"})


def test_shard_value_made_once_by_the_settings() -> None:
    s = load_settings(
        {
            "MOONMIND_CODEX_SHARD": "1",
            "MOONMIND_CODEX_QUEUE_PREFIX": "cx",
            "MOONMIND_CODEX_AUTH_VOLUME_TEMPLATE": "login_{shard}",
            "MOONMIND_CODEX_HOST_NAME": "worker-a",
        }
    )
    assert s.served_shard == s.locate_shard(1)
    assert (s.served_shard.queue, s.served_shard.volume, s.served_shard.host) == (
        "cx-1",
        "login_1",
        "worker-a",
    )
    assert str(s.locate_shard(2)) == "shard 2 (volume login_2 on host worker-a)"
    with pytest.raises(SettingsError, match="out of range"):
        s.locate_shard(3)


def test_fleet_env_file_sits_under_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered = tmp_path / "fleet.env"
    rendered.write_text(
        "# rendered by Ansible\n"
        "MOONMIND_CODEX_HOST_NAME=inventory-name\n"
        "MOONMIND_CODEX_JOB_UID=2000\n"
        "MOONMIND_CODEX_LAST_REFRESH_WARN_DAYS=3\n"
    )
    monkeypatch.setenv("MOONMIND_CODEX_ENV_FILE", str(rendered))
    monkeypatch.setenv("MOONMIND_CODEX_JOB_UID", "3000")
    s = load_settings()
    assert (s.host_name, s.job_uid, s.last_refresh_warn_days) == ("inventory-name", 3000, 3.0)
    monkeypatch.setenv("MOONMIND_CODEX_ENV_FILE", "")
    assert load_settings().job_uid == 3000 and load_settings().host_name != "inventory-name"


def test_a_process_variable_replaces_the_fleet_env_files_setting_in_either_form(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url_file = tmp_path / "database_url"
    url_file.write_text("sqlite:////from/the/file.sqlite3\n")
    rendered = tmp_path / "fleet.env"
    rendered.write_text(
        f"MOONMIND_CODEX_DATABASE_URL_FILE={url_file}\n"
        "MOONMIND_CODEX_BROKER_URL=amqp://file:pw@mq:5672//\n"
    )
    monkeypatch.setenv("MOONMIND_CODEX_ENV_FILE", str(rendered))
    assert load_settings().database_url == "sqlite:////from/the/file.sqlite3"
    monkeypatch.setenv("MOONMIND_CODEX_DATABASE_URL", "sqlite:////by/hand.sqlite3")
    by_hand = tmp_path / "broker_url"
    by_hand.write_text("amqp://hand:pw@mq:5672//")
    monkeypatch.setenv("MOONMIND_CODEX_BROKER_URL_FILE", str(by_hand))
    s = load_settings()
    assert (s.database_url, s.broker_url) == (
        "sqlite:////by/hand.sqlite3",
        "amqp://hand:pw@mq:5672//",
    )
    # Both forms set by hand is still a mistake.
    monkeypatch.setenv("MOONMIND_CODEX_DATABASE_URL_FILE", str(url_file))
    with pytest.raises(SettingsError, match="set either MOONMIND_CODEX_DATABASE_URL or"):
        load_settings()


def test_bad_fleet_env_file_names_the_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rendered = tmp_path / "fleet.env"
    rendered.write_text("MOONMIND_CODEX_SHARD_COUNT=3\nexport PATH=/x\n")
    monkeypatch.setenv("MOONMIND_CODEX_ENV_FILE", str(rendered))
    with pytest.raises(SettingsError, match=r"fleet.env line 2 is not a MOONMIND_CODEX_NAME=value"):
        load_settings()
    monkeypatch.setenv("MOONMIND_CODEX_ENV_FILE", str(tmp_path / "absent.env"))
    assert load_settings().shard_count == 3  # a host without a fleet: defaults


def _rendered_cpu_shares(settings: Settings) -> tuple[object, object, list[str]]:
    """The CPU weight in the SDK kwargs, the low-level config and the ``docker run`` argv."""
    import docker

    from moonmind_codex.engine.containers import (
        JobImageContainer,
        api_create_config,
        create_kwargs,
        docker_run_argv,
    )

    spec = JobImageContainer(
        role="job", shard=settings.locate_shard(0), command=["true"], name="moonmind-codex-x"
    )
    client = SimpleNamespace(api=docker.APIClient(base_url="unix:///nonexistent", version="1.41"))
    argv = docker_run_argv(settings, spec)
    flag = (
        argv[argv.index("--cpu-shares") : argv.index("--cpu-shares") + 2]
        if ("--cpu-shares" in argv)
        else []
    )
    return (
        create_kwargs(settings, spec).get("cpu_shares"),
        api_create_config(client, settings, spec)["HostConfig"].get("CpuShares"),
        flag,
    )


def test_job_containers_weigh_less_than_the_control_plane_by_default() -> None:
    settings = load_settings({})
    assert settings.job_cpu_shares == 256  # the engine gives everything else 1024
    assert _rendered_cpu_shares(settings) == (256, 256, ["--cpu-shares", "256"])
    tuned = load_settings({"MOONMIND_CODEX_JOB_CPU_SHARES": "512"})
    assert _rendered_cpu_shares(tuned) == (512, 512, ["--cpu-shares", "512"])


def test_job_cpu_shares_zero_leaves_the_engine_default() -> None:
    assert _rendered_cpu_shares(load_settings({"MOONMIND_CODEX_JOB_CPU_SHARES": "0"})) == (
        None,
        None,
        [],
    )


def _rendered_limits(settings: Settings) -> tuple[dict[str, object], dict[str, object], list[str]]:
    """The hard limits in the SDK kwargs, the low-level host config and the argv flags."""
    import docker

    from moonmind_codex.engine.containers import (
        JobImageContainer,
        api_create_config,
        create_kwargs,
        docker_run_argv,
    )

    spec = JobImageContainer(
        role="probe", shard=settings.locate_shard(0), command=["true"], name="moonmind-codex-x"
    )
    client = SimpleNamespace(api=docker.APIClient(base_url="unix:///nonexistent", version="1.41"))
    sdk = create_kwargs(settings, spec)
    host = api_create_config(client, settings, spec)["HostConfig"]
    argv = docker_run_argv(settings, spec)
    flags = [
        f"{flag} {argv[argv.index(flag) + 1]}"
        for flag in ("--memory", "--pids-limit", "--cpus")
        if flag in argv
    ]
    return (
        {k: sdk[k] for k in ("mem_limit", "pids_limit", "nano_cpus") if k in sdk},
        {k: host[k] for k in ("Memory", "PidsLimit", "NanoCpus") if host.get(k)},
        flags,
    )


def test_job_image_containers_have_memory_and_process_limits_by_default() -> None:
    assert _rendered_limits(load_settings({})) == (
        {"mem_limit": "8192m", "pids_limit": 4096},
        {"Memory": 8192 * 2**20, "PidsLimit": 4096},
        ["--memory 8192m", "--pids-limit 4096"],
    )


def test_job_limits_are_settings_and_zero_lifts_them() -> None:
    tuned = load_settings(
        {
            "MOONMIND_CODEX_JOB_MEMORY_MB": "512",
            "MOONMIND_CODEX_JOB_PIDS_LIMIT": "128",
            "MOONMIND_CODEX_JOB_CPUS": "1.5",
        }
    )
    assert _rendered_limits(tuned) == (
        {"mem_limit": "512m", "pids_limit": 128, "nano_cpus": 1_500_000_000},
        {"Memory": 512 * 2**20, "PidsLimit": 128, "NanoCpus": 1_500_000_000},
        ["--memory 512m", "--pids-limit 128", "--cpus 1.5"],
    )
    # As the workers role renders them: an explicit 0 (or 0.0) for "no limit".
    lifted = load_settings(
        {
            "MOONMIND_CODEX_JOB_MEMORY_MB": "0",
            "MOONMIND_CODEX_JOB_PIDS_LIMIT": "0",
            "MOONMIND_CODEX_JOB_CPUS": "0.0",
        }
    )
    assert _rendered_limits(lifted) == ({}, {}, [])


def test_a_file_twin_is_read_with_a_size_cap(tmp_path: Path) -> None:
    big = tmp_path / "url"
    big.write_bytes(b"a" * (64 * 1024 + 1))
    with pytest.raises(SettingsError, match="holds more than 65536 bytes"):
        load_settings({"MOONMIND_CODEX_BROKER_URL_FILE": str(big)})
    # An endless stream ends in the same clear error instead of a hang.
    with pytest.raises(SettingsError, match="holds more than 65536 bytes"):
        load_settings({"MOONMIND_CODEX_BROKER_URL_FILE": "/dev/zero"})
