"""Across the fleet: login check, a login, Codex tasks through the broker, teardown, a move.

Each test sets up the logins it needs and puts back what it changes (fleetops), so any one of
them runs alone after converge, in any order. The exception is the move, which runs last and
leaves the fleet moved; every verify starts by putting the fleet back (conftest.py).
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fleetops import (
    BROKER,
    FAKE_KEY,
    HOST_A,
    HOST_B,
    INVENTORY,
    fleet_cli,
    on,
    playbook,
    restore_fleet,
    set_logins,
    sign_in,
    unique,
)

from moonmind_codex.core.routing import shard_for_key
from tests.unit.helpers import chatgpt_auth

testinfra_hosts: list[str] = []  # the tests below address hosts explicitly
# Phases are sent as the host's producer (the CLI's broker URL): a worker container's own URL
# belongs to its shard's broker user, which may publish to no other shard's queue.
AS_PRODUCER = "--env MOONMIND_CODEX_BROKER_URL_FILE=/etc/moonmind-codex/broker_url"


@pytest.fixture
def fleet_put_back() -> Iterator[None]:
    """The fleet as inventory/hosts.yml has it, before the test and again after it."""
    restore_fleet()
    yield
    restore_fleet()


@pytest.fixture
def fleet_as_converged() -> None:
    """The fleet as inventory/hosts.yml has it before the test; left as the test leaves it.

    For a test marked ``leaves_fleet_changed``, which runs last (conftest.py): moving the fleet
    back after it would cost a three-host site.yml that nothing after it needs. The next verify
    puts it back first (``converged_fleet_first`` in conftest.py).
    """
    restore_fleet()


def recap_changed(output: str) -> dict[str, int]:
    return {
        host: int(n) for host, n in re.findall(r"(mmc-molecule-\S+)\s+:.*?changed=(\d+)", output)
    }


def task_sections(output: str) -> dict[str, str]:
    """A playbook's output, split per task: task name to everything it printed."""
    sections = {}
    for chunk in output.split("\nTASK [")[1:]:
        name, _, rest = chunk.partition("]")
        sections[name] = rest.split("\nPLAY ")[0]
    return sections


def login_check_table() -> dict[int, str]:
    done = playbook("login_check.yml")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = re.findall(r"(\d+)\s+codex_auth_\d+\s+(\S+)\s+(ok|warn|blocked)\b", done.stdout)
    assert rows, done.stdout[-3000:]
    return {int(shard): f"{host} {status}" for shard, host, status in rows}


def key_for(shard: int) -> str:
    return next(
        k for k in (f"molecule/repo-{i}" for i in range(1000)) if shard_for_key(k, 3) == shard
    )


def enqueue(from_host: Any, run_id: str, shard: int) -> dict[str, Any]:
    out = from_host.check_output(
        f"docker exec {AS_PRODUCER} moonmind-codex-worker-0 moonmind-codex enqueue "
        f"--run-id {run_id} "
        f"--phase specify --repository {key_for(shard)} --timeout 120 --wait -- "
        "sh -c 'id -u; codex login status'"
    )
    result: dict[str, Any] = json.loads(out)
    return result


def test_login_check_reports_every_shard_not_logged_in() -> None:
    set_logins({0: False, 1: False, 2: False})
    assert login_check_table() == {
        0: f"{HOST_A} blocked",
        1: f"{HOST_A} blocked",
        2: f"{HOST_B} blocked",
    }


def test_login_writes_auth_json_0600_owned_by_1000() -> None:
    host_a = on(HOST_A)
    set_logins({0: False})
    sign_in(0)
    out = host_a.check_output(
        "docker run --rm --network none --entrypoint stat -v codex_auth_0:/c "
        "moonmind-codex/job:latest -c '%a %u:%g' /c/auth.json"
    )
    assert out.strip() == "600 1000:1000"


def test_login_check_tells_logged_in_from_not_logged_in() -> None:
    set_logins({0: True, 1: False, 2: False})
    assert login_check_table() == {
        0: f"{HOST_A} ok",
        1: f"{HOST_A} blocked",
        2: f"{HOST_B} blocked",
    }


def test_codex_task_runs_on_the_owning_host_with_its_volume() -> None:
    host_a, host_b = on(HOST_A), on(HOST_B)
    set_logins({0: True, 2: True})
    for shard, owner, host in ((0, HOST_A, host_a), (2, HOST_B, host_b)):
        run_id = unique(f"molecule-run-{shard}")
        result = enqueue(host_a, run_id, shard)  # sent from host-a, through the broker host
        assert (result["queue"], result["shard"], result["volume"], result["host"]) == (
            f"codex-{shard}",
            shard,
            f"codex_auth_{shard}",
            owner,
        )
        assert (result["outcome"], result["preflight_status"]) == ("succeeded", "ok")
        log = host.file(result["log_path"]).content_string
        assert log.splitlines()[0] == "1000" and "API key configured" in log
        audit = [
            json.loads(line)
            for line in host.file(
                "/var/lib/moonmind-codex/audit/codex-audit.jsonl"
            ).content_string.splitlines()
        ]
        mine = [r for r in audit if r["run_id"] == run_id]
        assert [r["event"] for r in mine] == ["codex_phase_started", "codex_phase_finished"]
        assert {(r["queue"], r["shard"], r["volume"], r["host"]) for r in mine} == {
            (f"codex-{shard}", shard, f"codex_auth_{shard}", owner)
        }


def test_phase_on_a_shard_without_login_is_blocked_on_its_host() -> None:
    host_a = on(HOST_A)
    set_logins({1: False})
    result = host_a.run(
        f"docker exec {AS_PRODUCER} moonmind-codex-worker-0 moonmind-codex enqueue --run-id "
        f"{unique('molecule-blocked')} --phase specify --repository {key_for(1)} "
        "--timeout 60 --wait -- true"
    )
    assert result.rc != 0
    text = result.stdout + result.stderr
    assert "shard 1" in text and "codex_auth_1" in text and "moonmind-codex login --shard 1" in text


def test_broker_has_one_consumer_per_shard_queue() -> None:
    out = on(BROKER).check_output(
        "docker exec moonmind-codex-broker rabbitmqctl -q list_queues name consumers"
    )
    consumers = dict(
        line.split()
        for line in out.splitlines()
        if line.startswith("codex-") and "pidbox" not in line
    )
    assert consumers == {"codex-0": "1", "codex-1": "1", "codex-2": "1"}


def test_check_mode_runs_through_and_changes_nothing(fleet_put_back: None) -> None:
    done = playbook("site.yml", "--check", "--diff")
    assert done.returncode == 0, done.stdout[-3000:]
    changed = recap_changed(done.stdout)
    assert set(changed) == {HOST_A, HOST_B, BROKER}
    # The tasks that would change, with their hosts, to say what drifted.
    would = re.findall(r"TASK \[([^\]]*)\][^\n]*\n(?:[^\n]+\n)*?changed: \[([^\]]+)\]", done.stdout)
    assert set(changed.values()) == {0}, would


def test_teardown_keeps_logins_and_site_restores_the_fleet(fleet_put_back: None) -> None:
    host_a = on(HOST_A)
    set_logins({0: True})
    before = host_a.check_output(
        "docker run --rm --network none --entrypoint sha256sum -v codex_auth_0:/c "
        "moonmind-codex/job:latest /c/auth.json"
    )
    history = fleet_status(host_a, 0)["runs"]
    done = playbook("teardown.yml")
    assert done.returncode == 0, done.stdout[-3000:]
    for shard in (0, 1):
        assert not host_a.service(f"moonmind-codex-worker@{shard}").is_enabled
        assert host_a.run(f"docker inspect moonmind-codex-worker-{shard}").rc != 0
    assert host_a.run("docker volume inspect codex_auth_0 codex_auth_1").rc == 0
    store_host = on(BROKER)
    assert not store_host.service("moonmind-codex-database").is_enabled
    assert store_host.run("docker inspect moonmind-codex-database").rc != 0
    assert store_host.run("docker volume inspect moonmind_codex_database_data").rc == 0
    done = playbook("site.yml")
    assert done.returncode == 0, done.stdout[-3000:]
    for shard in (0, 1):
        assert host_a.service(f"moonmind-codex-worker@{shard}").is_running
    assert fleet_status(host_a, 0)["runs"] == history  # the run store kept its records
    after = host_a.check_output(
        "docker run --rm --network none --entrypoint sha256sum -v codex_auth_0:/c "
        "moonmind-codex/job:latest /c/auth.json"
    )
    assert after == before  # the login survived teardown and re-provisioning untouched
    assert login_check_table()[0] == f"{HOST_A} ok"


@pytest.mark.leaves_fleet_changed
def test_move_a_shard_to_another_host_with_its_login(
    tmp_path: Path, fleet_as_converged: None
) -> None:
    """The operator's move: edit the inventory, run site.yml, carry the login with move-login.

    It runs last and leaves shard 1 on host-b; the next verify moves it back first (site.yml,
    the login carried home, the volume left on host-b removed).
    """
    host_a, host_b = on(HOST_A), on(HOST_B)
    set_logins({1: True})
    moved = tmp_path / "hosts.yml"
    moved.write_text(
        INVENTORY.read_text()
        .replace("moonmind_codex_shards: [0, 1]", "moonmind_codex_shards: [0]")
        .replace("moonmind_codex_shards: [2]", "moonmind_codex_shards: [1, 2]")
    )
    done = playbook("site.yml", inventory=moved)
    assert done.returncode == 0, done.stdout[-3000:]
    assert not host_a.service("moonmind-codex-worker@1").is_enabled
    assert host_a.run("docker inspect moonmind-codex-worker-1").rc != 0
    assert host_a.run("docker volume inspect codex_auth_1").rc == 0  # kept, not purged
    assert host_b.service("moonmind-codex-worker@1").is_running

    # At -vvv Ansible prints every task's result and module arguments (a registered stdout, a
    # command's stdin), so only no_log keeps the login out of the output.
    done = playbook(
        "move_login.yml", "-vvv", "-e", "shard=1", "-e", f"from_host={HOST_A}", inventory=moved
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert FAKE_KEY not in done.stdout + done.stderr
    tasks = task_sections(done.stdout)
    for carrying in (
        "Read auth.json from the old host's volume",
        "Write it into the new owner's volume (0600, owned by the job uid)",
    ):
        assert "'no_log: true' was specified for this result" in tasks[carrying], tasks[carrying]
        assert '"module_args"' not in tasks[carrying]
    # The control: the step without no_log shows its result and arguments at this verbosity.
    cleared = tasks["Empty the old copy so the login is live on one host only"]
    assert '"module_args"' in cleared and "clear-login" in cleared, cleared
    stat = host_b.check_output(
        "docker run --rm --network none --entrypoint stat -v codex_auth_1:/c "
        "moonmind-codex/job:latest -c '%a %u' /c/auth.json"
    )
    assert stat.strip() == "600 1000"
    gone = host_a.run(
        "docker run --rm --network none --entrypoint test -v codex_auth_1:/c "
        "moonmind-codex/job:latest -e /c/auth.json"
    )
    assert gone.rc == 1  # the old copy is emptied: one live login per shard
    result = enqueue(host_a, unique("molecule-moved-1"), 1)
    assert (result["host"], result["volume"], result["outcome"]) == (
        HOST_B,
        "codex_auth_1",
        "succeeded",
    )


# Run on host A in the worker image with the host's fleet.env (host network): what a client on
# another host sees of the provisioned broker.
BOUNDARY_PROBE = r"""
import json, socket, ssl
from dataclasses import replace
from pathlib import Path
from moonmind_codex.settings import load_settings
from moonmind_codex.worker.celery_app import create_app

settings = load_settings()
host = settings.broker_url.rsplit("@", 1)[1].rsplit(":", 1)[0]
seen = {"broker_address": host}
try:
    socket.create_connection((host, 5672), 5).close()
    seen["plain_5672"] = "open"
except OSError as error:
    seen["plain_5672"] = type(error).__name__
for name, context in (
    ("system_cas", ssl.create_default_context()),
    ("fleet_ca", ssl.create_default_context(cafile=str(settings.broker_ca_path))),
):
    try:
        context.wrap_socket(socket.create_connection((host, 5671), 5), server_hostname=host).close()
        seen[name] = "verified"
    except ssl.SSLError as error:
        seen[name] = "refused: " + error.reason
# A phase with the producer's valid password and no signature.
unsigned = replace(
    settings, signing_key_path=None, signing_cert_path=None, signing_trust_dir=None
)
app = create_app(unsigned, sticky=False)
seen["task_id"] = str(app.send_task(
    "moonmind_codex.codex_phase",
    kwargs={"run_id": "RUN_ID", "phase": "only", "command": ["sh", "-c", "cat ~/.codex/*"],
            "affinity_key": "KEY"},
).id)
print(json.dumps(seen))
"""


def test_the_provisioned_broker_is_tls_only_and_its_shards_refuse_unsigned_phases() -> None:
    """TLS-only broker (the plain port closed to other hosts, the fleet CA needed), and an
    unsigned phase sent with the producer's valid password runs nothing and is audited."""
    host_a, host_b = on(HOST_A), on(HOST_B)
    set_logins({2: True})
    run_id = unique("molecule-unsigned")
    probe = BOUNDARY_PROBE.replace("RUN_ID", run_id).replace("KEY", key_for(2))
    encoded = base64.b64encode(probe.encode()).decode()
    probed = host_a.run(
        f"echo {encoded} | base64 -d | docker run --rm -i --network host --pull never "
        "-v /etc/moonmind-codex:/etc/moonmind-codex:ro "
        "--env-file /etc/moonmind-codex/fleet.env --entrypoint /opt/moonmind-codex/bin/python "
        "moonmind-codex/worker:latest -"
    )
    assert probed.rc == 0, probed.stdout[-2000:] + probed.stderr[-3000:]
    seen = json.loads(probed.stdout.strip().splitlines()[-1])
    assert seen["broker_address"] not in ("127.0.0.1", "localhost"), seen
    assert seen["plain_5672"] == "ConnectionRefusedError", seen
    assert seen["system_cas"].startswith("refused: CERTIFICATE_VERIFY_FAILED"), seen
    assert seen["fleet_ca"] == "verified", seen

    audit = "/var/lib/moonmind-codex/audit/codex-audit.jsonl"
    refusal: list[dict[str, Any]] = []

    def refused() -> bool:
        lines = host_b.run(f"cat {audit}").stdout.splitlines()
        refusal[:] = [
            r
            for r in map(json.loads, lines)
            if r.get("event") == "codex_task_refused" and r.get("task_id") == seen["task_id"]
        ]
        return bool(refusal)

    deadline = time.monotonic() + 90
    while not refused():
        assert time.monotonic() < deadline, "no codex_task_refused record on host B"
        time.sleep(1)
    assert refusal[0]["reason"].startswith("not signed"), refusal
    assert refusal[0]["queue"] == "codex-2", refusal
    assert not [
        r
        for r in map(json.loads, host_b.run(f"cat {audit}").stdout.splitlines())
        if r.get("run_id") == run_id and r.get("event") != "codex_task_refused"
    ]
    started = host_b.run(
        f"docker ps -a --filter label=io.moonmind.codex.run-id={run_id} --format x"
    ).stdout
    assert started.strip() == ""


STORE_PROBE = """
import json, psycopg
from moonmind_codex.settings import load_settings
from sqlalchemy.engine import make_url
url = make_url(load_settings().database_url)
seen = {"driver": url.drivername, "sslmode": url.query.get("sslmode"), "host": url.host}
args = dict(host=url.host, port=url.port, dbname=url.database, user=url.username,
            password=url.password, connect_timeout=10)
with psycopg.connect(**args, sslmode="verify-full", sslrootcert=url.query["sslrootcert"]) as c:
    seen["tls"] = c.execute(
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()[0]
    seen["superuser"] = c.execute(
        "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]
for name, extra in (("plain", {"sslmode": "disable"}),
                    ("system_cas", {"sslmode": "verify-full", "sslrootcert": "system"})):
    try:
        psycopg.connect(**args, **extra).close()
        seen[name] = "connected"
    except psycopg.OperationalError as exc:
        seen[name] = "refused: " + str(exc).splitlines()[0][-120:]
print(json.dumps(seen))
"""


def test_the_shared_run_store_is_postgresql_over_tls_only_its_url_a_worker_uid_file() -> None:
    """The codex_database host's PostgreSQL: owned by a systemd unit, reached by both worker
    hosts with the fleet CA and the password from database_url (0400), refused in plain text."""
    broker = on(BROKER)
    assert broker.service("moonmind-codex-database").is_running
    policy = broker.check_output(
        "docker inspect --format '{{.HostConfig.RestartPolicy.Name}}' moonmind-codex-database"
    )
    assert policy in ("no", "")
    for name in (HOST_A, HOST_B):
        host = on(name)
        assert host.check_output("stat -c '%a %u' /etc/moonmind-codex/database_url") == "400 10001"
        fleet_env = host.file("/etc/moonmind-codex/fleet.env").content_string
        assert "MOONMIND_CODEX_DATABASE_URL_FILE=/etc/moonmind-codex/database_url" in fleet_env
        assert "postgresql" not in fleet_env
        encoded = base64.b64encode(STORE_PROBE.encode()).decode()
        probed = host.run(
            f"echo {encoded} | base64 -d | docker exec -i moonmind-codex-worker-"
            f"{2 if name == HOST_B else 0} /opt/moonmind-codex/bin/python -"
        )
        assert probed.rc == 0, probed.stdout[-2000:] + probed.stderr[-3000:]
        seen = json.loads(probed.stdout.strip().splitlines()[-1])
        assert (seen["driver"], seen["sslmode"], seen["tls"], seen["superuser"]) == (
            "postgresql+psycopg",
            "verify-full",
            True,
            False,
        ), seen
        assert seen["host"] not in ("127.0.0.1", "localhost"), seen
        assert seen["plain"].startswith("refused") and "no encryption" in seen["plain"], seen
        assert seen["system_cas"].startswith("refused"), seen


def chatgpt_login(refresh_token: str) -> str:
    """A fabricated ChatGPT login (fake JWTs: the CLI reads only the file; nothing signs in)."""
    login = chatgpt_auth()
    login["tokens"]["refresh_token"] = refresh_token
    return json.dumps(login)


def import_login(shard: int, host_name: str, login: str) -> None:
    done = fleet_cli(on(host_name), "login", f"--shard={shard}", "--from-file=-", stdin=login)
    assert done.rc == 0, done.stdout + done.stderr


def fleet_status(host: Any, shard: int) -> dict[str, Any]:
    """``moonmind-codex status --json`` as the shard's worker sees the shared run store."""
    shown = host.run(f"docker exec moonmind-codex-worker-{shard} moonmind-codex status --json")
    assert shown.rc in (0, 2), shown.stdout[-2000:] + shown.stderr[-2000:]
    status: dict[str, Any] = json.loads(shown.stdout)
    return status


def test_a_login_copied_to_the_other_host_is_reported_and_blocked_there() -> None:
    """Two volumes, two hosts, one ChatGPT login: the shared run store fences the later copy
    (its next phase is blocked with the fix), status and the login check report it on both
    hosts, the store keeps no token, and a login of its own lifts the fence."""
    host_a, host_b = on(HOST_A), on(HOST_B)
    marker = "SECRET-REFRESH-molecule-" + uuid.uuid4().hex[:8]
    login = chatgpt_login(marker)
    try:
        import_login(0, HOST_A, login)
        owner = enqueue(host_a, unique("molecule-owner"), 0)
        assert (owner["outcome"], owner["host"]) == ("succeeded", HOST_A), owner
        import_login(2, HOST_B, login)  # the copy, on the other host
        # The copy's first phase runs (the store does not know the login yet) and registers it.
        registering = enqueue(host_a, unique("molecule-copy"), 2)
        assert (registering["outcome"], registering["host"]) == ("succeeded", HOST_B), registering
        blocked = host_a.run(
            f"docker exec {AS_PRODUCER} moonmind-codex-worker-0 moonmind-codex enqueue --run-id "
            f"{unique('molecule-fenced')} --phase specify --repository {key_for(2)} "
            "--timeout 120 --wait -- true"
        )
        text = blocked.stdout + blocked.stderr
        assert blocked.rc != 0, text
        assert f"same ChatGPT login as shard 0 (volume codex_auth_0 on host {HOST_A})" in text, text
        assert "moonmind-codex login --shard 2" in text, text
        assert "moonmind-codex login-fence resolve --shard 2" in text, text
        # Reported on both hosts, from the one shared store.
        for host, shard in ((host_a, 0), (host_b, 2)):
            rows = {row["shard"]: row for row in fleet_status(host, shard)["shards"]}
            assert (rows[0]["health"], rows[2]["health"]) == ("ok", "fenced"), rows
            kept_by = rows[2]["fence"]["kept_by"]
            assert (kept_by["shard"], kept_by["host"]) == (0, HOST_A), rows[2]
        table = login_check_table()  # its container reads the shared store over the network
        assert (table[0], table[2]) == (f"{HOST_A} ok", f"{HOST_B} blocked"), table
        dumped = on(BROKER).run(
            "docker exec -u postgres moonmind-codex-database "
            "/usr/lib/postgresql/15/bin/pg_dump -h /var/run/postgresql moonmind_codex"
        )
        assert dumped.rc == 0 and "spec_workflow_runs" in dumped.stdout, dumped.stderr[-2000:]
        assert marker not in dumped.stdout and "SECRET-" not in dumped.stdout
        # Shard 2 signed in with a login of its own: the fence lifts by itself.
        import_login(2, HOST_B, chatgpt_login("SECRET-REFRESH-own-" + uuid.uuid4().hex[:8]))
        own = enqueue(host_a, unique("molecule-own"), 2)
        assert own["outcome"] == "succeeded", own
        rows = {row["shard"]: row for row in fleet_status(host_b, 2)["shards"]}
        assert rows[2]["health"] == "ok", rows[2]
    finally:
        # The other tests sign in with an API key where a shard has no login.
        set_logins({0: False, 2: False})
