"""The fleet's trust boundary on the real broker and a real shard worker (issue 9).

The broker runs as the playbook runs it: TLS only, with the fleet's users (one per shard, the
producer, the host application's workers) and no tags. The shard worker verifies the broker
with the fleet CA and accepts only task messages signed by a trusted certificate. Producers
are the real CLI (`moonmind-codex runs submit`), in their own processes, as on a host.
"""

from __future__ import annotations

import json
import os
import pickle
import secrets
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import amqp.exceptions
import pytest
from kombu import Connection, Exchange, Queue

from harness.fleet import (
    STATE_DIR,
    WORKER_UID,
    producer_database_url,
    start_worker,
    wait_for_log,
)
from harness.logins import api_key_login
from harness.pki import Identity, signed_body
from harness.secure_broker import SecureBroker, running_secure_broker
from moonmind_codex.producer.signing import (
    SIGNED_CONTEXT,
    signed_context,
)
from moonmind_codex.settings import Settings
from moonmind_codex.store.audit import read_records
from moonmind_codex.store.runstore import RunStore
from moonmind_codex.worker.celery_app import create_app

SHARDS = 3
SERVED = 1


@dataclass
class SecureFleet:
    broker: SecureBroker
    tag: str
    state: Path
    producer_id: Identity
    rogue_id: Identity
    trust: Path
    worker: Any

    @property
    def audit_log(self) -> Path:
        return self.state / "audit" / "codex-audit.jsonl"

    def worker_log(self) -> str:
        return str(self.worker.logs().decode("utf-8", "replace")[-3000:])

    def refusals(self) -> list[dict[str, Any]]:
        return [r for r in read_records(self.audit_log) if r["event"] == "codex_task_refused"]

    def cli_env(self, identity: Identity | None, user: str = "codex-producer") -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MOONMIND_CODEX_")} | {
            "MOONMIND_CODEX_ENV_FILE": "",
            "MOONMIND_CODEX_BROKER_URL": self.broker.url(user),
            "MOONMIND_CODEX_BROKER_CA_PATH": str(self.broker.ca.cert_path),
            "MOONMIND_CODEX_SHARD_COUNT": str(SHARDS),
            "MOONMIND_CODEX_DATABASE_URL": producer_database_url(self.state),
            "MOONMIND_CODEX_DECLARE_QUEUES": "false",
        }
        if identity is not None:
            env |= {
                "MOONMIND_CODEX_SIGNING_KEY_PATH": str(identity.key),
                "MOONMIND_CODEX_SIGNING_CERT_PATH": str(identity.cert),
                "MOONMIND_CODEX_SIGNING_TRUST_DIR": str(self.trust),
            }
        return env

    def submit(
        self, identity: Identity | None, command: list[str], run_id: str, phases: int = 1
    ) -> None:
        """``moonmind-codex runs submit`` of a run on the served shard's queue: one phase
        ``only``, or ``phases`` phases ``p0``, ``p1``, ... each running ``command``."""
        names = ["only"] if phases == 1 else [f"p{n}" for n in range(phases)]
        definition = {
            "run_id": run_id,
            "repository": self.repository(),
            "phases": [{"name": name, "command": command} for name in names],
        }
        done = subprocess.run(
            [sys.executable, "-m", "moonmind_codex", "runs", "submit", "-"],
            input=json.dumps(definition),
            capture_output=True,
            text=True,
            env=self.cli_env(identity),
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr

    def repository(self) -> str:
        """A repository name whose runs the router sends to the served shard."""
        from moonmind_codex.core.routing import shard_for_key

        for n in range(10_000):
            name = f"org/sec-{self.tag}-{n}"
            if shard_for_key(name, SHARDS) == SERVED:
                return name
        raise AssertionError("no repository routes to the served shard")

    def store(self) -> RunStore:
        return RunStore.open(producer_database_url(self.state))


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not seen within {timeout_s} s: {what}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def fleet(client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureFleet]:
    tag = secrets.token_hex(3)
    work = tmp_path_factory.mktemp("secure")
    state = work / "state"
    state.mkdir()
    with running_secure_broker(client, work, shard_count=SHARDS) as broker:
        producer_id = broker.ca.issue("signing-producer")
        # Issued by the fleet CA, but not in the trust directory: not a fleet producer.
        rogue_id = broker.ca.issue("signing-rogue")
        worker_env = broker.signed_worker(state, producer_id)
        trust = state / "pki" / "trusted"
        os.chown(state, WORKER_UID, WORKER_UID)
        url_file = work / "broker_url"
        url_file.write_text(broker.url(f"codex-shard-{SERVED}"))
        url_file.chmod(0o444)
        volume = client.volumes.create(f"mmc-test-{tag}-auth-{SERVED}")
        api_key_login(volume.name)
        worker = start_worker(
            client,
            tag,
            url_file,
            state,
            SERVED,
            f"mmc-test-{tag}-sworker-{SERVED}",
            volume.name,
            shard_count=SHARDS,
            extra_env=worker_env,
        )
        try:
            logs = wait_for_log(worker, " ready.")
            assert " ready." in logs, logs[-3000:]
            yield SecureFleet(broker, tag, state, producer_id, rogue_id, trust, worker)
        finally:
            worker.remove(force=True)
            for leftover in client.volumes.list(filters={"name": f"mmc-test-{tag}-"}):
                leftover.remove(force=True)


def test_the_broker_has_no_plain_amqp_listener_beyond_loopback(fleet: SecureFleet) -> None:
    # The container's own address is not loopback: a plain AMQP client there is refused.
    address = fleet.broker.container_ip()
    with pytest.raises(ConnectionRefusedError), socket.create_connection((address, 5672), 5):
        pass
    # ... while TLS is served there, and the only published port is the TLS one.
    with socket.create_connection((address, 5671), 5):
        pass
    fleet.broker.container.reload()
    published = {port for port, bindings in fleet.broker.container.ports.items() if bindings}
    assert published == {"5671/tcp"}


def test_a_tls_client_that_does_not_trust_the_fleet_ca_is_refused(fleet: SecureFleet) -> None:
    context = ssl.create_default_context()  # the system's CAs only
    with (
        socket.create_connection((fleet.broker.host, fleet.broker.port), 5) as raw,
        pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"),
    ):
        context.wrap_socket(raw, server_hostname="localhost")
    # With the fleet CA the same handshake succeeds (the refusal above is about the CA).
    trusting = ssl.create_default_context(cafile=str(fleet.broker.ca.cert_path))
    with (
        socket.create_connection((fleet.broker.host, fleet.broker.port), 5) as raw,
        trusting.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.version() in ("TLSv1.3", "TLSv1.2")


def _consume_once(broker: SecureBroker, user: str, queue: str) -> None:
    """basic.get on a queue the broker's definitions declared (read permission on it)."""
    with Connection(broker.url(user), ssl=broker.ssl_options(), connect_timeout=10) as conn:
        Queue(queue, Exchange(queue), queue, durable=True, no_declare=True)(conn.channel()).get()


@pytest.mark.parametrize(
    ("user", "queue"),
    [
        (f"codex-shard-{SERVED}", "codex-2"),
        (f"codex-shard-{SERVED}", "celery"),
        ("codex-producer", "codex-0"),
        ("codex-producer", "celery"),
        ("codex-app-worker", "codex-0"),
    ],
)
def test_a_broker_user_cannot_consume_a_queue_that_is_not_its_own(
    fleet: SecureFleet, user: str, queue: str
) -> None:
    with pytest.raises(amqp.exceptions.AccessRefused, match="access to queue"):
        _consume_once(fleet.broker, user, queue)


@pytest.mark.parametrize(
    ("user", "queue"),
    [("codex-shard-0", "codex-0"), ("codex-app-worker", "celery")],
)
def test_a_broker_user_consumes_its_own_queue(fleet: SecureFleet, user: str, queue: str) -> None:
    _consume_once(fleet.broker, user, queue)  # no AccessRefused


def test_no_broker_user_has_a_tag_and_guest_is_gone(fleet: SecureFleet) -> None:
    done = fleet.broker.container.exec_run(
        ["rabbitmqctl", "-q", "list_users", "--no-table-headers"]
    )
    assert done.exit_code == 0, done.output
    users = dict(
        ([*line.split("\t"), ""])[:2] for line in done.output.decode().splitlines() if line.strip()
    )
    expected = {f"codex-shard-{n}" for n in range(SHARDS)} | {"codex-producer", "codex-app-worker"}
    assert set(users) == expected
    assert all(tags.strip("[] ") == "" for tags in users.values()), users


def test_a_signed_phase_from_a_fleet_producer_runs(fleet: SecureFleet) -> None:
    run_id = f"sec-{fleet.tag}-signed"
    fleet.submit(fleet.producer_id, ["sh", "-c", "printf signed-ok"], run_id)
    store = fleet.store()
    wait_until(
        lambda: (run := store.get_run(run_id)) is not None and run.status == "succeeded",
        180,
        f"run {run_id} succeeded; worker log:\n{fleet.worker_log()}",
    )
    assert not [r for r in fleet.refusals() if r.get("run_id") == run_id]


def test_a_signed_run_goes_on_to_its_next_phases_signed_by_the_worker(
    fleet: SecureFleet,
) -> None:
    """The worker signs what it sends on (the chain's next phase) with a context of its own:
    the second phase is accepted, not refused as a replay of the first."""
    run_id = f"sec-{fleet.tag}-chain"
    fleet.submit(fleet.producer_id, ["sh", "-c", "printf chained"], run_id, phases=3)
    store = fleet.store()
    wait_until(
        lambda: (run := store.get_run(run_id)) is not None and run.status == "succeeded",
        180,
        f"run {run_id} succeeded; worker log:\n{fleet.worker_log()}",
    )
    assert [(a.phase, a.status) for a in store.attempts(run_id)] == [
        ("p0", "succeeded"),
        ("p1", "succeeded"),
        ("p2", "succeeded"),
    ]
    assert not [r for r in fleet.refusals() if r.get("run_id") == run_id]


def _refused_for(fleet: SecureFleet, task_id: str, timeout_s: float = 60) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def seen() -> bool:
        found[:] = [r for r in fleet.refusals() if r["task_id"] == task_id]
        return bool(found)

    wait_until(
        seen,
        timeout_s,
        f"a refusal of task {task_id} in the audit log; worker log:\n{fleet.worker_log()}",
    )
    return found[0]


def _send_unsigned(fleet: SecureFleet, run_id: str) -> str:
    """A valid-looking phase message with the producer's broker password but no signature."""
    settings = Settings(
        broker_url=fleet.broker.url("codex-producer"),
        broker_ca_path=fleet.broker.ca.cert_path,
        shard_count=SHARDS,
        database_url=producer_database_url(fleet.state),
        declare_queues=False,
    )
    app = create_app(settings, sticky=False)
    result = app.send_task(
        "moonmind_codex.codex_phase",
        kwargs={
            "run_id": run_id,
            "phase": "only",
            "command": ["sh", "-c", "cat ~/.codex/*"],
            # Routed to the served shard like any phase of its repository.
            "affinity_key": fleet.repository(),
        },
    )
    return str(result.id)


def test_an_unsigned_phase_message_runs_nothing_and_is_recorded_as_refused(
    fleet: SecureFleet, client: Any
) -> None:
    run_id = f"sec-{fleet.tag}-unsigned"
    task_id = _send_unsigned(fleet, run_id)
    refusal = _refused_for(fleet, task_id)
    assert refusal["reason"].startswith("not signed"), refusal
    assert (refusal["queue"], refusal["shard"], refusal["task_name"]) == (
        f"codex-{SERVED}",
        SERVED,
        "moonmind_codex.codex_phase",
    )
    assert fleet.store().get_run(run_id) is None
    assert fleet.store().attempts(run_id) == []
    assert not client.containers.list(
        all=True, filters={"label": f"io.moonmind.codex.run-id={run_id}"}
    )
    # The worker goes on.
    fleet.worker.reload()
    assert fleet.worker.status == "running"


def test_a_phase_signed_by_an_untrusted_key_runs_nothing_and_is_recorded_as_refused(
    fleet: SecureFleet, client: Any
) -> None:
    run_id = f"sec-{fleet.tag}-rogue"
    fleet.submit(fleet.rogue_id, ["sh", "-c", "cat ~/.codex/auth.json"], run_id)
    store = fleet.store()
    task_id = next(a.task_id for a in store.attempts(run_id))
    assert task_id is not None
    refusal = _refused_for(fleet, task_id)
    assert refusal["reason"].startswith("signature not verified"), refusal
    assert [a.status for a in store.attempts(run_id)] == ["pending"]
    assert not client.containers.list(
        all=True, filters={"label": f"io.moonmind.codex.run-id={run_id}"}
    )


def test_a_signed_phase_with_a_disallowed_command_runs_nothing_and_is_recorded_as_refused(
    fleet: SecureFleet, client: Any
) -> None:
    run_id = f"sec-{fleet.tag}-cat"
    fleet.submit(fleet.producer_id, ["cat", "/home/app/.codex/auth.json"], run_id)
    store = fleet.store()
    task_id = next(a.task_id for a in store.attempts(run_id))
    assert task_id is not None
    refusal = _refused_for(fleet, task_id)
    assert "MOONMIND_CODEX_ALLOWED_COMMANDS" in refusal["reason"], refusal
    assert (refusal["run_id"], refusal["phase"], refusal["volume"]) == (
        run_id,
        "only",
        f"mmc-test-{fleet.tag}-auth-{SERVED}",
    )
    assert not client.containers.list(
        all=True, filters={"label": f"io.moonmind.codex.run-id={run_id}"}
    )


# --- A trusted key is not enough: signed bodies are JSON, and their context is signed too ---


def _publish_signed(
    fleet: SecureFleet,
    body: bytes,
    inner_type: str,
    headers: dict[str, Any],
    inner_encoding: str = "utf-8",
) -> None:
    """A task message for the served shard, its body signed with the fleet producer's own key
    (as a producer holding that key could send it), published with the producer's password."""
    packed = signed_body(fleet.producer_id, body, inner_type, inner_encoding)
    with Connection(
        fleet.broker.url("codex-producer"), ssl=fleet.broker.ssl_options(), connect_timeout=10
    ) as conn:
        conn.Producer().publish(
            packed,
            # Each queue's own topic exchange (the default exchange is not the producer's).
            exchange=f"codex-{SERVED}",
            routing_key=f"codex-{SERVED}",
            headers=headers,
            content_type="application/data",
            content_encoding="utf-8",
        )


def _phase_headers(task_id: str, run_id: str, attempt: int = 1) -> dict[str, Any]:
    return {
        "lang": "py",
        "task": "moonmind_codex.codex_phase",
        "id": task_id,
        "root_id": task_id,
        "moonmind_codex_run": run_id,
        "moonmind_codex_phase": "only",
        "moonmind_codex_attempt": attempt,
    }


def _phase_body(fleet: SecureFleet, run_id: str, command: list[str], context: Any) -> bytes:
    kwargs = {
        "run_id": run_id,
        "phase": "only",
        "command": command,
        "affinity_key": fleet.repository(),
    }
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    if context is not None:
        embed[SIGNED_CONTEXT] = context
    return json.dumps([[], kwargs, embed]).encode()


class _RunsCode:
    """A pickle whose loading leaves a marker file in the worker's state directory."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {STATE_DIR}/{self.marker}",))


def _unsafe_body(kind: str, marker: str) -> tuple[bytes, str, str]:
    """(body, inner content type, inner encoding) of a signed body in ``kind``."""
    if kind == "pickle":
        return pickle.dumps(_RunsCode(marker)), "application/x-python-serialize", "binary"
    if kind == "yaml":
        text = f'!!python/object/apply:os.system ["touch {STATE_DIR}/{marker}"]\n'
        return text.encode(), "application/x-yaml", "utf-8"
    # msgpack runs no code, but it is a second decoder a signed body must not reach.
    return b"\x93\x90\x81\xa3run\xa3x\x80", "application/x-msgpack", "binary"


@pytest.mark.parametrize("kind", ["pickle", "yaml", "msgpack"])
def test_a_signed_body_that_is_not_json_runs_no_code_and_is_recorded_as_refused(
    fleet: SecureFleet, client: Any, kind: str
) -> None:
    marker = f"ran-{kind}-{fleet.tag}"
    body, inner_type, inner_encoding = _unsafe_body(kind, marker)
    task_id = f"sec-{fleet.tag}-{kind}"
    _publish_signed(fleet, body, inner_type, _phase_headers(task_id, task_id), inner_encoding)
    refusal = _refused_for(fleet, task_id)
    # Nothing decoded the body: no marker in the worker's state directory, no job container,
    # the worker still consuming.
    assert not (fleet.state / marker).exists(), f"the signed {kind} body ran in the worker"
    assert refusal["reason"].startswith("signed body refused"), refusal
    assert inner_type in refusal["reason"], refusal
    assert not client.containers.list(
        all=True, filters={"label": f"io.moonmind.codex.run-id={task_id}"}
    )
    fleet.worker.reload()
    assert fleet.worker.status == "running"


def _context(task_id: str, run_id: str, now: float, ttl_s: float = 600) -> dict[str, Any]:
    return signed_context(_phase_headers(task_id, run_id), now, ttl_s)


def test_a_hand_built_signed_message_with_its_context_runs(fleet: SecureFleet) -> None:
    """The control for the replays below: the same construction, unaltered, is accepted."""
    run_id = task_id = f"sec-{fleet.tag}-control"
    body = _phase_body(
        fleet, run_id, ["sh", "-c", "printf control"], _context(task_id, run_id, time.time())
    )
    _publish_signed(fleet, body, "application/json", _phase_headers(task_id, run_id))
    wait_until(
        lambda: any(
            r["event"] == "codex_phase_finished" and r.get("task_id") == task_id
            for r in read_records(fleet.audit_log)
        ),
        180,
        f"phase {task_id} finished; worker log:\n{fleet.worker_log()}",
    )
    assert not [r for r in fleet.refusals() if r["task_id"] == task_id]


@pytest.mark.parametrize(
    ("changed", "value"),
    [
        ("id", "another-task-id"),
        ("task", "moonmind_codex.ping"),
        ("moonmind_codex_phase", "publish"),
        ("moonmind_codex_attempt", 2),
        ("moonmind_codex_run", "someone-elses-run"),
    ],
)
def test_a_signed_message_replayed_under_other_headers_is_refused(
    fleet: SecureFleet, client: Any, changed: str, value: Any
) -> None:
    run_id = task_id = f"sec-{fleet.tag}-replay-{changed}"
    body = _phase_body(
        fleet, run_id, ["sh", "-c", "printf replayed"], _context(task_id, run_id, time.time())
    )
    headers = _phase_headers(task_id, run_id) | {changed: value}
    _publish_signed(fleet, body, "application/json", headers)
    refusal = _refused_for(fleet, headers["id"])
    assert f"header {changed}=" in refusal["reason"], refusal
    assert "replayed or altered" in refusal["reason"], refusal
    assert not client.containers.list(
        all=True, filters={"label": f"io.moonmind.codex.run-id={run_id}"}
    )


def test_an_expired_signed_message_is_refused(fleet: SecureFleet, client: Any) -> None:
    run_id = task_id = f"sec-{fleet.tag}-expired"
    # Captured two days ago with a one-day expiry.
    context = _context(task_id, run_id, time.time() - 2 * 86400, ttl_s=86400)
    body = _phase_body(fleet, run_id, ["sh", "-c", "printf late"], context)
    _publish_signed(fleet, body, "application/json", _phase_headers(task_id, run_id))
    refusal = _refused_for(fleet, task_id)
    assert "expired at" in refusal["reason"], refusal
    assert not client.containers.list(
        all=True, filters={"label": f"io.moonmind.codex.run-id={run_id}"}
    )


def test_a_signed_message_without_a_signed_context_is_refused(fleet: SecureFleet) -> None:
    run_id = task_id = f"sec-{fleet.tag}-nocontext"
    body = _phase_body(fleet, run_id, ["sh", "-c", "printf old"], None)
    _publish_signed(fleet, body, "application/json", _phase_headers(task_id, run_id))
    refusal = _refused_for(fleet, task_id)
    assert "no signed context" in refusal["reason"], refusal
    assert "runs retry" in refusal["reason"], refusal
