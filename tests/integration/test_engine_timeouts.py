"""How long the runtime waits for the Docker engine: a slow engine is not a missing one.

The engine here is a stand-in, named so: a unix-socket HTTP server that answers the two calls
the Docker SDK makes on connecting (``/version``, ``/_ping``) with the real engine's recorded
replies, and holds every other call for a while, as a busy engine holds a container create.
The real engine cannot be made slow on demand; what is under test is the client's timeouts.
"""

from __future__ import annotations

import http.server
import json
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from moonmind_codex.engine.client import DockerUnavailable, connect
from moonmind_codex.settings import Settings

# What a Docker 28 engine answers to GET /version (the fields the SDK reads).
VERSION_REPLY = {"ApiVersion": "1.50", "MinAPIVersion": "1.24", "Version": "28.2.2"}
PING_TIMEOUT_S = 1.0
# Longer than the ping's timeout, far shorter than a call's.
SLOW_CALL_S = 2.5


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class _SlowEngine(http.server.BaseHTTPRequestHandler):
    hang_ping = False

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path.endswith("/version"):
            self._reply(json.dumps(VERSION_REPLY).encode(), "application/json")
        elif path.endswith("/_ping"):
            if self.hang_ping:
                time.sleep(PING_TIMEOUT_S * 4)
            self._reply(b"OK", "text/plain")
        else:  # e.g. GET /v1.50/volumes/<name>: answered, after a while
            time.sleep(SLOW_CALL_S)
            name = path.rsplit("/", 1)[-1]
            self._reply(json.dumps({"Name": name, "Driver": "local"}).encode(), "application/json")

    def _reply(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: pytest shows the assertions, not the stand-in's access log."""

    def address_string(self) -> str:
        return "stand-in"  # a unix peer has no (host, port) to format


def _serve(path: Path, hang_ping: bool) -> Iterator[str]:
    handler = type("Handler", (_SlowEngine,), {"hang_ping": hang_ping})
    server = _UnixHTTPServer(str(path), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"unix://{path}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def slow_engine(tmp_path: Path) -> Iterator[str]:
    yield from _serve(tmp_path / "slow.sock", hang_ping=False)


@pytest.fixture
def hung_engine(tmp_path: Path) -> Iterator[str]:
    yield from _serve(tmp_path / "hung.sock", hang_ping=True)


def test_a_call_slower_than_the_ping_timeout_is_waited_for(slow_engine: str) -> None:
    client = connect(Settings(docker_url=slow_engine), timeout_s=PING_TIMEOUT_S)
    began = time.monotonic()
    assert client.volumes.get("codex_auth_0").name == "codex_auth_0"
    assert time.monotonic() - began >= SLOW_CALL_S  # it was slow, and it was waited for


def test_an_engine_that_does_not_answer_its_ping_is_unavailable(hung_engine: str) -> None:
    began = time.monotonic()
    with pytest.raises(DockerUnavailable, match="cannot reach the Docker engine at unix://"):
        connect(Settings(docker_url=hung_engine, host_name="h1"), timeout_s=PING_TIMEOUT_S)
    assert time.monotonic() - began < PING_TIMEOUT_S * 3
