"""The installed `moonmind-codex` command against the real engine."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import docker.errors
import pytest

from harness.engine import EngineEvents, watching_engine
from harness.logins import api_key_login, run_in_volume
from tests.integration.conftest import VolumeFactory, in_volume, unique
from tests.unit.helpers import chatgpt_auth

CLI = shutil.which("moonmind-codex") or os.path.join(
    os.path.dirname(sys.executable), "moonmind-codex"
)


def cli(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env=dict(os.environ, **(env or {})),
        input=stdin,
    )


def volume_env(volume: str) -> dict[str, str]:
    # Shard 0's volume is the test's volume; the rest of the fleet is irrelevant here.
    return {
        "MOONMIND_CODEX_SHARD": "0",
        "MOONMIND_CODEX_AUTH_VOLUME": volume,
        "MOONMIND_CODEX_HOST_NAME": "cli-host",
    }


def probes_on(events: EngineEvents, volume: str) -> list[dict[str, Any]]:
    """The engine's create events of probe containers on ``volume``."""
    return [
        e
        for e in events.containers({"io.moonmind.codex.volume": volume})
        if e.get("Action") == "create"
        and e["Actor"]["Attributes"].get("io.moonmind.codex.role") == "probe"
    ]


def test_preflight_ok_and_json(client: Any, make_volume: Callable[..., str]) -> None:
    volume = make_volume()
    api_key_login(volume)
    with watching_engine() as events:
        done = cli("preflight", "--shard", "0", "--json", env=volume_env(volume))
        # The verdict comes from a probe container on the shard's volume, which is gone after.
        (probe,) = probes_on(events, volume)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert (data["status"], data["volume"], data["host"]) == ("ok", volume, "cli-host")
    assert "sk-test" not in done.stdout
    assert client.containers.list(all=True, filters={"id": probe["Actor"]["ID"]}) == []


def test_preflight_blocked_exit_2(client: Any, make_volume: Callable[..., str]) -> None:
    volume = make_volume()
    with watching_engine() as events:
        done = cli("preflight", "--shard", "0", env=volume_env(volume))
        # Positive control for the "nothing changed" checks below: the probe shows up in events.
        assert events.naming(volume) != []
    assert done.returncode == 2
    for part in ("BLOCKED", "shard 0", volume, "host cli-host", "moonmind-codex login --shard 0"):
        assert part in done.stdout


def test_login_api_key_stdin_then_ok(client: Any, make_volume: Callable[..., str]) -> None:
    volume = make_volume()
    before = cli("preflight", "--shard", "0", env=volume_env(volume))
    assert before.returncode == 2, before.stdout  # the control: not signed in yet
    done = cli(
        "login",
        "--shard",
        "0",
        "--api-key-stdin",
        env=volume_env(volume),
        stdin="sk-test-NOT-A-REAL-KEY-2222\n",
    )
    assert done.returncode == 0, done.stderr
    assert "OK for shard 0" in done.stdout and "2222" not in done.stdout + done.stderr
    # The key is in the shard's volume, as Codex wrote it: the job uid's file, mode 0600 ...
    written = in_volume(volume, "stat -c %a:%u:%g /home/app/.codex/auth.json")
    assert written.strip() == "600:1000:1000"
    stored = json.loads(in_volume(volume, "cat /home/app/.codex/auth.json"))
    assert stored["OPENAI_API_KEY"] == "sk-test-NOT-A-REAL-KEY-2222"
    # ... and the shard is now usable: the pre-flight of that volume says ok.
    after = cli("preflight", "--shard", "0", "--json", env=volume_env(volume))
    assert after.returncode == 0, after.stdout + after.stderr
    assert json.loads(after.stdout)["status"] == "ok"


@pytest.mark.parametrize(
    ("args", "env", "code", "message"),
    [
        (["preflight", "--shard", "9"], {}, 78, "shard 9 is out of range"),
        (["preflight", "--shard", "x"], {}, 64, "shard must be a whole number"),
        (["login", "--shard", "5", "--api-key-stdin"], {}, 78, "shard 5 is out of range"),
        (["route", "k", "--shards", "0"], {}, 64, "the shard count must be >= 1"),
        (["route", "k"], {"MOONMIND_CODEX_SHARD_COUNT": "-2"}, 78, "must be >= 1"),
        (["route", "k"], {"MOONMIND_CODEX_SHARD_COUNT": "3x"}, 78, "is not a whole number"),
        (["preflight", "--shard", "0"], {"MOONMIND_CODEX_SHARDS": "3"}, 78, "typo?"),
        (["worker"], {}, 78, "MOONMIND_CODEX_SHARD is not set"),
        (["worker", "--shard", "7"], {}, 78, "shard 7 is out of range"),
        (["repair", "--shard", "-1"], {}, 64, "shard must be >= 0"),
        (["preflight", "--shard", "0"], {"MOONMIND_CODEX_QUEUE_MODE": "fanout"}, 78, "QUEUE_MODE"),
        (["login-check", "--shard", "0", "--shard", "4"], {}, 78, "shard 4 is out of range"),
        (["export-login", "--shard", "3"], {}, 78, "shard 3 is out of range"),
        (["clear-login"], {}, 64, "the following arguments are required: --shard"),
        (["bogus"], {}, 64, "invalid choice"),
    ],
)
def test_bad_input_changes_nothing(
    client: Any, args: list[str], env: dict[str, str], code: int, message: str
) -> None:
    tag = unique("badinput")
    scoped = {
        "MOONMIND_CODEX_AUTH_VOLUME_TEMPLATE": tag + "-auth-{shard}",
        "MOONMIND_CODEX_WORKSPACE_VOLUME_PREFIX": tag + "-ws-",
        **env,
    }
    with watching_engine() as events:
        done = cli(*args, env=scoped, stdin="sk-should-never-be-used")
        touched = events.naming(tag)
    assert done.returncode == code, (done.stdout, done.stderr)
    assert message in done.stderr
    # One clear line, not a traceback.
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert touched == []
    assert client.volumes.list(filters={"name": tag}) == []


def test_login_from_stdin_validates_then_writes(
    client: Any, make_volume: Callable[..., str]
) -> None:
    volume = make_volume()
    bad = cli("login", "--shard", "0", "--from-file", "-", env=volume_env(volume), stdin="{}")
    assert bad.returncode == 65 and "standard input is not a usable Codex login" in bad.stderr
    good = cli(
        "login",
        "--shard",
        "0",
        "--from-file",
        "-",
        env=volume_env(volume),
        stdin=json.dumps(chatgpt_auth()),
    )
    assert good.returncode == 0, good.stderr
    assert "OK for shard 0" in good.stdout
    assert "SECRET" not in good.stdout + good.stderr


def _year_one_login() -> str:
    login = chatgpt_auth()
    login["last_refresh"] = "0001-01-01T00:00:00+01:00"  # out of range once made UTC
    return json.dumps(login)


@pytest.mark.parametrize(
    ("stdin", "said"),
    [
        ("[" * 100000, "standard input is not a usable Codex login"),
        (_year_one_login(), "standard input is not a usable Codex login"),
    ],
    ids=["deeply-nested", "year-one-last-refresh"],
)
def test_a_bad_login_file_is_refused_and_the_shards_login_is_untouched(
    client: Any, make_volume: Callable[..., str], stdin: str, said: str
) -> None:
    """Issue 12's cases on the real engine: a clear error, exit 65, nothing changed."""
    volume = make_volume(state="api_key")
    before = in_volume(
        volume, "sha256sum /home/app/.codex/auth.json; stat -c %a:%u /home/app/.codex/auth.json"
    )
    with watching_engine() as events:
        done = cli("login", "--shard", "0", "--from-file", "-", env=volume_env(volume), stdin=stdin)
        touched = events.naming(volume)
    assert done.returncode == 65, done.stderr
    assert said in done.stderr and "Traceback" not in done.stderr + done.stdout
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    # Refused before the engine was asked for anything on this volume.
    assert touched == []
    after = in_volume(
        volume, "sha256sum /home/app/.codex/auth.json; stat -c %a:%u /home/app/.codex/auth.json"
    )
    assert after == before


def run_on_a_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as its stdin/stdout (as an operator would).

    Reads until the command ends on its own (it is never interrupted), within a bound.
    """
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [CLI, *args],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        env=dict(os.environ, **env),
        start_new_session=True,
    )
    os.close(secondary)
    seen = b""
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(primary, 4096)
                except OSError:  # the terminal closed: the command ended
                    break
                if not chunk:
                    break
                seen += chunk
        try:
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the command did not end on its own: {seen!r}") from None
        return code, seen.decode("utf-8", "replace")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        os.close(primary)


def test_device_login_runs_the_real_codex_device_flow_and_cleans_up(
    client: Any, make_volume: Callable[..., str]
) -> None:
    """`login` (no source option) is codex's device-code flow in a job container on the volume.

    The login container gets the job network; here that is "none", so the sign-in service is
    unreachable wherever the test runs and the outcome is one: codex's device-code request
    fails, the command ends on its own with codex's status, and the volume holds no login.
    """
    volume = make_volume()
    with watching_engine() as events:
        code, output = run_on_a_terminal(
            ["login", "--shard", "0"], {**volume_env(volume), "MOONMIND_CODEX_JOB_NETWORK": "none"}
        )
        seen = events.naming(volume)
    # One line: codex's failed request to the device-code endpoint (not the browser flow's
    # local server, not a one-time code), then codex's own status; no "signed in" claim.
    (line,) = output.strip().splitlines()
    assert line.startswith("Error logging in: "), output
    assert "https://auth.openai.com/api/accounts/deviceauth/usercode" in line, output
    assert code == 1, output
    created = [e for e in seen if e.get("Type") == "container" and e.get("Action") == "create"]
    assert len(created) == 1, created
    attributes = created[0]["Actor"]["Attributes"]
    assert attributes["io.moonmind.codex.role"] == "login"
    assert attributes["io.moonmind.codex.shard"] == "0"
    assert client.containers.list(all=True, filters={"volume": volume}) == []
    listing = run_in_volume(volume, "ls -A /home/app/.codex")
    assert "auth.json" not in listing.stdout.decode().split()  # codex's own lock files may stay


def test_login_check_judges_several_shards_in_one_command(make_volume: VolumeFactory) -> None:
    tag = unique("lcheck")
    signed_in = make_volume.named(f"{tag}-auth-0", "api_key")
    empty = make_volume.named(f"{tag}-auth-1", "empty")
    env = {
        "MOONMIND_CODEX_AUTH_VOLUME_TEMPLATE": tag + "-auth-{shard}",
        "MOONMIND_CODEX_HOST_NAME": "check-host",
        "MOONMIND_CODEX_QUEUE_PREFIX": "cx",
        "MOONMIND_CODEX_LAST_REFRESH_WARN_DAYS": "2",
    }
    done = cli("login-check", "--shard", "0", "--shard", "1", "--json", env=env)
    assert done.returncode == 2, done.stderr  # one of the two is blocked
    results = json.loads(done.stdout)
    assert [(r["shard"], r["queue"], r["volume"], r["host"], r["status"]) for r in results] == [
        (0, "cx-0", signed_in, "check-host", "ok"),
        (1, "cx-1", empty, "check-host", "blocked"),
    ]
    assert "moonmind-codex login --shard 1" in results[1]["remediation"]
    assert cli("login-check", "--shard", "0", env=env).returncode == 0


def test_export_and_clear_login_move_a_login_without_logging_it(
    client: Any, make_volume: Callable[..., str]
) -> None:
    source, target = make_volume(), make_volume()
    login = chatgpt_auth()
    write = cli(
        "login", "--shard", "0", "--from-file", "-", env=volume_env(source), stdin=json.dumps(login)
    )
    assert write.returncode == 0, write.stderr
    # Watched from here on: the login written just before is not part of what is checked.
    with watching_engine() as events:
        exported = cli("export-login", "--shard", "0", env=volume_env(source))
        assert exported.returncode == 0, exported.stderr
        assert json.loads(exported.stdout) == login
        moved = cli(
            "login",
            "--shard",
            "0",
            "--from-file",
            "-",
            env=volume_env(target),
            stdin=exported.stdout,
        )
        assert moved.returncode == 0, moved.stderr
        assert json.loads(in_volume(target, "cat /home/app/.codex/auth.json")) == login
        cleared = cli("clear-login", "--shard", "0", env=volume_env(source))
        assert cleared.returncode == 0, cleared.stderr
        assert "auth.json" not in in_volume(source, "ls -A /home/app/.codex").split()
        seen = events.naming(source)
    # The containers that carried the login ran with the "none" logging driver, as "move" and
    # "login" containers labelled with the volume, and are gone.
    created = [e for e in seen if e.get("Type") == "container" and e.get("Action") == "create"]
    roles = [e["Actor"]["Attributes"].get("io.moonmind.codex.role") for e in created]
    assert roles == ["move", "move"]  # export and clear, nothing else on the volume
    for event in created:
        assert client.containers.list(all=True, filters={"id": event["Actor"]["ID"]}) == []
    again = cli("export-login", "--shard", "0", env=volume_env(source))
    assert again.returncode == 1 and "holds no usable login" in again.stderr
    assert again.stdout == ""


# --- Enterprise access tokens: `login --access-token-stdin` with the real Codex CLI -------------
#
# The real CLI 0.169 checks a token before it writes anything: a token starting "at-" (a personal
# access token) with a request to https://auth.openai.com, any other token as an Agent Identity
# JWT, whose RS256 signature it checks against the JWKS at
# {chatgpt_base_url}/wham/agent-identities/jwks. So a fake token signs a volume in only against a
# fake sign-in service: a JWKS server on a test network, named by `chatgpt_base_url` in the
# volume's config.toml. Everything else is the production path.

SIGN_IN_SERVICE = """
import http.server, os, time
JWKS = os.environ["JWKS"].encode()
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        found = self.path.endswith("/wham/agent-identities/jwks")
        # The keys go out once the test has seen the login container (it touches /tmp/release),
        # so the container is alive while inspected; a bounded wait, never past 120 s.
        deadline = time.monotonic() + 120
        while found and not os.path.exists("/tmp/release") and time.monotonic() < deadline:
            time.sleep(0.05)
        body = JWKS if found else b"{}"
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.ThreadingHTTPServer(("", 8000), Handler).serve_forever()
"""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def agent_identity_token(exp_hours: float = 48) -> tuple[str, str]:
    """A signed Agent Identity JWT with the claims the CLI requires, and the JWKS that trusts it."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = key.public_key().public_numbers()
    modulus = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
    jwk = {"kty": "RSA", "kid": "test-kid", "use": "sig", "alg": "RS256", "n": _b64url(modulus)}
    jwk["e"] = _b64url(numbers.e.to_bytes(3, "big"))
    agent_key = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    now = int(time.time())
    claims = {
        "iss": "https://chatgpt.com/codex-backend/agent-identity",
        "aud": "codex-app-server",
        "iat": now,
        "exp": now + int(exp_hours * 3600),
        "agent_runtime_id": "agent-test-runtime",
        "agent_private_key": base64.b64encode(agent_key).decode(),  # PKCS#8, standard base64
        "account_id": "acct-test",
        "chatgpt_user_id": "user-test",
        "email": "test@example.invalid",
        "plan_type": "enterprise",
        "chatgpt_account_is_fedramp": False,
    }
    header = _b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "test-kid"}).encode())
    payload = _b64url(json.dumps(claims).encode())
    signature = key.sign(f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{payload}.{_b64url(signature)}", json.dumps({"keys": [jwk]})


@pytest.fixture
def sign_in_service(client: Any) -> Any:
    """A network holding a fake JWKS server; yields (network, server name, start(jwks))."""
    network = client.networks.create(unique("signin-net"))
    started: list[Any] = []

    def start(jwks: str) -> str:
        name = unique("signin")
        server = client.containers.create(
            "moonmind-codex/job:latest",
            entrypoint=["python3", "-c", SIGN_IN_SERVICE],
            environment={"JWKS": jwks},
            name=name,
            network=network.name,
            user="1000:1000",
            detach=True,
        )
        started.append(server)
        server.start()
        probe = "import urllib.request as u; u.urlopen('http://localhost:8000/x')"
        for _ in range(50):
            done = server.exec_run(["python3", "-c", probe])
            if b"404" in done.output or done.exit_code == 0:
                return name
            time.sleep(0.2)
        raise AssertionError("the fake sign-in service did not start")

    yield network.name, start
    for server in started:
        server.remove(force=True)
    network.remove()


def watch_login_container(
    client: Any, volume: str, server: str
) -> tuple[threading.Thread, dict[str, Any]]:
    """Catch the live login container on ``volume``: its inspect data and what its logs give.

    The fake sign-in service ``server`` holds its answer until then; released afterwards.
    """
    seen: dict[str, Any] = {}
    labels = ["io.moonmind.codex.role=login", f"io.moonmind.codex.volume={volume}"]

    def watch() -> None:
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline and "inspect" not in seen:
                for container in client.containers.list(filters={"label": labels}):
                    seen["inspect"] = json.dumps(client.api.inspect_container(container.id))
                    try:
                        seen["logs"] = client.api.logs(container.id).decode("utf-8", "replace")
                    except docker.errors.APIError as exc:
                        seen["logs_error"] = str(exc)
                    break
                time.sleep(0.1)
        finally:
            client.containers.get(server).exec_run(["touch", "/tmp/release"])

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread, seen


def assert_token_nowhere(token: str, *texts: str) -> None:
    for piece in (token, *token.split(".")):
        for text in texts:
            assert piece not in text


def test_login_access_token_stdin_signs_in_through_the_real_cli(
    client: Any, make_volume: Callable[..., str], sign_in_service: Any
) -> None:
    network, start = sign_in_service
    token, jwks = agent_identity_token(exp_hours=48)
    server = start(jwks)
    volume = make_volume()
    in_volume(
        volume,
        f"printf 'chatgpt_base_url = \"http://{server}:8000/backend-api\"\\n' "
        "> /home/app/.codex/config.toml",
    )
    env = {**volume_env(volume), "MOONMIND_CODEX_JOB_NETWORK": network}
    thread, seen = watch_login_container(client, volume, server)
    done = cli("login", "--shard", "0", "--access-token-stdin", env=env, stdin=token + "\n")
    thread.join(timeout=60)
    # The real CLI wrote the login (its `login status` in the follow-up check refuses a
    # chatgpt_base_url that is not OpenAI's: checked again below without the test's config).
    assert f"volume {volume} signed in; checking it now:" in done.stdout, done.stderr
    assert done.returncode == 2 and "(auth mode access_token)" in done.stdout
    written = in_volume(
        volume,
        "cd /home/app/.codex && stat -c '%a %u' auth.json && python3 -c \"import json, hashlib; "
        "d = json.load(open('auth.json')); print(sorted(d), d['auth_mode'], "
        "hashlib.sha256(d['agent_identity'].encode()).hexdigest())\"",
    )
    assert written.splitlines() == [
        "600 1000",
        "['OPENAI_API_KEY', 'agent_identity', 'auth_mode'] agentIdentity "
        + hashlib.sha256(token.encode()).hexdigest(),
    ]
    # The token went in on standard input only: never in argv, env, labels or logs.
    assert "inspect" in seen, "the login container was not seen while it ran"
    inspected = json.loads(seen["inspect"])
    assert inspected["HostConfig"]["LogConfig"]["Type"] == "none"
    assert inspected["Config"]["Cmd"] == ["codex", "login", "--with-access-token"]
    assert inspected["HostConfig"]["NetworkMode"] == network
    assert "logs" not in seen and "logs_error" in seen
    assert_token_nowhere(token, done.stdout, done.stderr, seen["inspect"], seen["logs_error"])

    # Without the test's sign-in service in config.toml the pre-flight (no network) judges the
    # file; the CLI's own status cannot verify the token offline, which is reported, not blocked.
    in_volume(volume, "rm /home/app/.codex/config.toml")
    checked = cli("preflight", "--shard", "0", "--json", env=volume_env(volume))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    report = json.loads(checked.stdout)
    assert (report["status"], report["auth_mode"]) == ("ok", "access_token")
    assert report["reason"] == "logged in with an enterprise access token"
    status = next(f for f in report["findings"] if f["name"] == "codex login status")
    assert status["status"] == "info" and "not verified" in status["detail"]
    table = cli("login-check", "--shard", "0", "--json", env=volume_env(volume))
    assert table.returncode == 0 and json.loads(table.stdout)[0]["auth_mode"] == "access_token"
    assert_token_nowhere(token, checked.stdout, checked.stderr, table.stdout, table.stderr)


@pytest.mark.parametrize(
    ("token", "cli_error"),
    [
        (
            "at-test-NOT-A-REAL-TOKEN-3333",
            "Error logging in with access token: failed to request personal access token "
            "metadata: error sending request for url "
            "(https://auth.openai.com/api/accounts/v1/user-auth-credential/whoami)",
        ),
        (
            "header.eyJzdWIiOiAidGVzdCJ9.signature-NOT-REAL-4444",
            "Error logging in with access token: failed to decode agent identity JWT: invalid "
            "credential JSON",
        ),
    ],
)
def test_login_access_token_refused_offline_passes_the_cli_reason_through(
    client: Any, make_volume: Callable[..., str], token: str, cli_error: str
) -> None:
    volume = make_volume()
    env = {**volume_env(volume), "MOONMIND_CODEX_JOB_NETWORK": "none"}
    done = cli("login", "--shard", "0", "--access-token-stdin", env=env, stdin=token + "\n")
    assert done.returncode == 1, done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(
        "moonmind-codex: codex login --with-access-token refused the access token (exit 1): "
    )
    assert cli_error in line and f"volume {volume} was not changed" in line
    assert "'none'" in line and done.stdout == ""
    assert_token_nowhere(token, done.stdout, done.stderr)
    assert in_volume(volume, "ls /home/app/.codex/auth.json 2>/dev/null || echo none") == "none\n"


def test_login_access_token_stdin_empty_starts_nothing(
    client: Any, make_volume: Callable[..., str]
) -> None:
    volume = make_volume()
    with watching_engine() as events:
        done = cli(
            "login", "--shard", "0", "--access-token-stdin", env=volume_env(volume), stdin="\n"
        )
        seen = events.naming(volume)
    assert done.returncode == 1
    assert "no access token was given on standard input" in done.stderr
    assert [e for e in seen if e.get("Type") == "container" and e.get("Action") == "create"] == []


def test_login_sources_are_exclusive() -> None:
    done = cli("login", "--shard", "0", "--api-key-stdin", "--access-token-stdin")
    assert done.returncode == 64 and "not allowed with argument" in done.stderr
