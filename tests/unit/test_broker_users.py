"""The broker's users, permissions and definitions (plugins/filter/moonmind_codex_broker.py).

What RabbitMQ does with these patterns is proved on the real broker in
tests/integration/test_broker_security.py; here: which names each pattern admits, and that the
definitions file is what RabbitMQ loads (its password hash format, stable across runs).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from moonmind_codex.producer.router import fleet_queues
from moonmind_codex.settings import Settings, SettingsError, load_settings

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins" / "filter"))
from moonmind_codex_broker import (
    FilterModule,
    amqp_url,
    broker_definitions,
    broker_users,
    fleet_queue_names,
    rabbit_password_hash,
    subject_alt_names,
)

REPLY = "0b6f1c2e-9d3a-4e5f-8a7b-1c2d3e4f5a6b"


def _user(users: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(u for u in users if u["name"] == name)


def _admits(pattern: str, name: str) -> bool:
    return re.search(pattern, name) is not None


def test_one_user_per_shard_then_the_producer_and_the_app_worker() -> None:
    names = [u["name"] for u in broker_users(3)]
    assert names == [
        "codex-shard-0",
        "codex-shard-1",
        "codex-shard-2",
        "codex-producer",
        "codex-app-worker",
    ]


@pytest.mark.parametrize(
    ("user", "may_read"),
    [
        ("codex-shard-1", {"codex-1", REPLY}),
        ("codex-producer", {REPLY}),
        ("codex-app-worker", {"celery", REPLY}),
    ],
)
def test_each_user_reads_only_its_own_queues(user: str, may_read: set[str]) -> None:
    read = _user(broker_users(3), user)["read"]
    candidates = {
        "codex-0",
        "codex-1",
        "codex-2",
        "codex-10",
        "codex-1x",
        "xcodex-1",
        "celery",
        "celeryx",
        REPLY,
        "celery.pidbox",
        "amq.default",
    }
    assert {name for name in candidates if _admits(read, name)} == may_read


def test_nobody_may_configure_a_fleet_queue_only_reply_queues() -> None:
    for user in broker_users(3):
        configure = user["configure"]
        assert _admits(configure, REPLY), user["name"]
        for queue in ("codex-0", "codex-1", "celery", "celery.pidbox", "celeryev"):
            assert not _admits(configure, queue), (user["name"], queue)


def test_only_workers_may_publish_through_the_default_exchange() -> None:
    # The right to publish to amq.default is the right to publish to any queue by name.
    users = broker_users(3)
    assert not _admits(_user(users, "codex-producer")["write"], "amq.default")
    assert _admits(_user(users, "codex-shard-0")["write"], "amq.default")
    assert _admits(_user(users, "codex-app-worker")["write"], "amq.default")
    assert not _admits(_user(users, "codex-producer")["write"], "amqXdefault")


def test_a_shard_publishes_only_to_its_own_queue_and_the_default_queue() -> None:
    write = _user(broker_users(3), "codex-shard-1")["write"]
    assert {q for q in ("codex-0", "codex-1", "codex-2", "celery") if _admits(write, q)} == {
        "codex-1",
        "celery",
    }


def test_producers_publish_to_every_codex_queue_and_the_default_queue() -> None:
    write = _user(broker_users(3), "codex-producer")["write"]
    assert all(_admits(write, q) for q in ("codex-0", "codex-2", "codex-11", "celery"))
    assert not _admits(write, "celery.pidbox")


def test_names_are_escaped_and_single_mode_shares_one_queue() -> None:
    users = broker_users(2, queue_prefix="co.dex", default_queue="def", mode="single")
    shard = _user(users, "codex-shard-1")
    assert _admits(shard["read"], "co.dex")
    assert not _admits(shard["read"], "coXdex")
    assert fleet_queue_names(2, "co.dex", "def", "single") == ["def", "co.dex"]
    assert fleet_queue_names(3) == ["celery", "codex-0", "codex-1", "codex-2"]


def _decode_hash(encoded: str, password: str) -> bool:
    raw = base64.b64decode(encoded)
    salt, digest = raw[:4], raw[4:]
    return digest == hashlib.sha256(salt + password.encode()).digest()


def test_password_hashes_are_rabbitmqs_salted_sha256_stable_and_per_user() -> None:
    first = rabbit_password_hash("codex-producer", "s3cret")
    assert _decode_hash(first, "s3cret")
    assert not _decode_hash(first, "other")
    assert rabbit_password_hash("codex-producer", "s3cret") == first  # a re-run changes nothing
    assert rabbit_password_hash("codex-shard-0", "s3cret") != first


def test_the_definitions_declare_users_permissions_and_topic_queues() -> None:
    users = broker_users(2)
    passwords = {u["name"]: f"pw-{u['name']}" for u in users}
    loaded = json.loads(broker_definitions(users, passwords, fleet_queue_names(2)))
    assert [u["name"] for u in loaded["users"]] == [u["name"] for u in users]
    assert all(u["tags"] == "" for u in loaded["users"])
    assert all(
        u["hashing_algorithm"] == "rabbit_password_hashing_sha256"
        and _decode_hash(u["password_hash"], passwords[u["name"]])
        for u in loaded["users"]
    )
    assert "s3cret" not in json.dumps(loaded) and "pw-codex" not in json.dumps(loaded)
    assert {(p["user"], p["read"]) for p in loaded["permissions"]} == {
        (u["name"], u["read"]) for u in users
    }
    assert [(e["name"], e["type"], e["durable"]) for e in loaded["exchanges"]] == [
        ("celery", "topic", True),
        ("codex-0", "topic", True),
        ("codex-1", "topic", True),
    ]
    assert [(b["source"], b["destination"], b["routing_key"]) for b in loaded["bindings"]] == [
        (q, q, q) for q in ("celery", "codex-0", "codex-1")
    ]


def test_definitions_refuse_a_user_without_a_password() -> None:
    users = broker_users(1)
    with pytest.raises(ValueError, match="no password for broker user"):
        broker_definitions(users, {"codex-shard-0": "x"}, fleet_queue_names(1))


def test_the_filters_are_exported_to_ansible() -> None:
    assert set(FilterModule().filters()) == {
        "moonmind_codex_broker_users",
        "moonmind_codex_broker_definitions",
        "moonmind_codex_fleet_queue_names",
        "moonmind_codex_subject_alt_names",
        "moonmind_codex_amqp_url",
        "moonmind_codex_postgresql_url",
    }


def test_amqp_urls_encode_the_whole_password_and_bracket_ipv6() -> None:
    assert amqp_url("codex-shard-0", "a/b@c:d%", "10.0.0.5", "5671") == (
        "amqps://codex-shard-0:a%2Fb%40c%3Ad%25@10.0.0.5:5671//"
    )
    assert amqp_url("moonmind", "pw", " broker.internal ", 5672, tls=False) == (
        "amqp://moonmind:pw@broker.internal:5672//"
    )
    assert amqp_url("u", "p", "fd00::5", 5671) == "amqps://u:p@[fd00::5]:5671//"
    # What kombu reads back is what went in.
    from kombu.utils.url import url_to_parts

    parts = url_to_parts(amqp_url("codex-producer", "x/y@z", "fd00::5", 5671))
    assert (parts.username, parts.password, parts.hostname, parts.port) == (
        "codex-producer",
        "x/y@z",
        "fd00::5",
        5671,
    )


def test_subject_alt_names_tell_addresses_from_names_once_each() -> None:
    assert subject_alt_names(["broker1", "10.0.0.5", "localhost", "127.0.0.1", "broker1", ""]) == [
        "DNS:broker1",
        "IP:10.0.0.5",
        "DNS:localhost",
        "IP:127.0.0.1",
    ]
    assert subject_alt_names(["::1"]) == ["IP:::1"]


def test_clients_use_the_brokers_queues_without_declaring_them() -> None:
    queues = fleet_queues(Settings(shard_count=2))
    assert [(q.name, q.exchange.name, q.exchange.type, q.routing_key) for q in queues] == [
        ("celery", "celery", "topic", "celery"),
        ("codex-0", "codex-0", "topic", "codex-0"),
        ("codex-1", "codex-1", "topic", "codex-1"),
    ]
    assert all(q.no_declare and q.durable for q in queues)


BASE = {"MOONMIND_CODEX_ENV_FILE": ""}


def test_signing_settings_go_together_and_name_what_is_missing() -> None:
    with pytest.raises(SettingsError, match="MOONMIND_CODEX_SIGNING_TRUST_DIR not set"):
        load_settings(
            BASE
            | {
                "MOONMIND_CODEX_SIGNING_KEY_PATH": "/k.pem",
                "MOONMIND_CODEX_SIGNING_CERT_PATH": "/c.pem",
            }
        )
    signed = load_settings(
        BASE
        | {
            "MOONMIND_CODEX_SIGNING_KEY_PATH": "/k.pem",
            "MOONMIND_CODEX_SIGNING_CERT_PATH": "/c.pem",
            "MOONMIND_CODEX_SIGNING_TRUST_DIR": "/trust",
        }
    )
    assert signed.signing and signed.signing_trust_dir == Path("/trust")
    assert not load_settings(BASE).signing


def test_paths_must_be_absolute_and_a_ca_needs_a_tls_url() -> None:
    with pytest.raises(SettingsError, match="must be an absolute path"):
        load_settings(BASE | {"MOONMIND_CODEX_SIGNING_KEY_PATH": "keys/k.pem"})
    with pytest.raises(SettingsError, match="not a TLS URL"):
        load_settings(BASE | {"MOONMIND_CODEX_BROKER_CA_PATH": "/ca.crt"})
    tls = load_settings(
        BASE
        | {
            "MOONMIND_CODEX_BROKER_URL": "amqps://u:p@broker:5671//",
            "MOONMIND_CODEX_BROKER_CA_PATH": "/ca.crt",
        }
    )
    assert tls.broker_ca_path == Path("/ca.crt")


@pytest.mark.parametrize(
    ("raw", "expected"), [("true", True), ("YES", True), ("0", False), ("off", False)]
)
def test_yes_no_settings(raw: str, expected: bool) -> None:
    settings = load_settings(
        BASE | {"MOONMIND_CODEX_REMOTE_CONTROL": raw, "MOONMIND_CODEX_DECLARE_QUEUES": raw}
    )
    assert (settings.remote_control, settings.declare_queues) == (expected, expected)


def test_a_yes_no_setting_that_is_neither_is_refused() -> None:
    with pytest.raises(SettingsError, match="REMOTE_CONTROL='maybe' is not a yes/no value"):
        load_settings(BASE | {"MOONMIND_CODEX_REMOTE_CONTROL": "maybe"})
    defaults = load_settings(BASE)
    assert (defaults.remote_control, defaults.declare_queues) == (False, True)


@pytest.mark.parametrize("cpus", ["1", "1-3", "0,2", "1-2,5,7-8"])
def test_a_job_cpuset_is_a_list_of_cores(cpus: str) -> None:
    from moonmind_codex.engine.containers import _limits

    settings = load_settings(BASE | {"MOONMIND_CODEX_JOB_CPUSET": cpus})
    assert settings.job_cpuset == cpus
    assert _limits(settings)["cpuset_cpus"] == cpus


@pytest.mark.parametrize("cpus", ["a", "1-", "3-1", "1,,2", "1 2", "1;2"])
def test_a_job_cpuset_that_is_not_a_list_of_cores_is_refused(cpus: str) -> None:
    with pytest.raises(SettingsError, match=r"JOB_CPUSET=.* is not a list of cores"):
        load_settings(BASE | {"MOONMIND_CODEX_JOB_CPUSET": cpus})


def test_no_job_cpuset_means_any_core() -> None:
    from moonmind_codex.engine.containers import _limits

    assert "cpuset_cpus" not in _limits(load_settings(BASE | {"MOONMIND_CODEX_JOB_CPUSET": ""}))
