"""The engine's own record of what a test did: a live event stream, not a look back.

A look back (``events(since=..., until=...)``) misses events in two ways: whole-second
windows include or exclude a neighbour's events by rounding, and the engine replays only its
last 256 events, which other tests on the same engine can push out. A watch opened before the
action sees every event from then on; ``settle`` waits until everything the engine emitted
before it has arrived (with a bound), so a test can also say that something did *not* happen.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import docker

# Any image present on a test machine serves for the marker container (it is never started).
MARKER_IMAGE = "moonmind-codex/job:latest"


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {timeout_s} s: {what}")
        time.sleep(0.1)


class EngineEvents:
    """Every event (any type, any action) the engine emits while this watch is open."""

    def __init__(self) -> None:
        self._engine = docker.from_env(timeout=60)
        # The engine has subscribed this stream once the call returns (it answered the request).
        self._stream = self._engine.events(decode=True)
        self._events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        with contextlib.suppress(Exception):  # the stream is closed by close()
            for event in self._stream:
                with self._lock:
                    self._events.append(event)

    def _snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._events)

    def settle(self, timeout_s: float = 120) -> list[dict[str, Any]]:
        """Every event so far: all those the engine emitted before this call have arrived.

        The engine sends events in order, so once a marker container created now is seen,
        every earlier event was. The marker's own events are left out.
        """
        marker = f"mmc-test-marker-{secrets.token_hex(4)}"
        self._engine.containers.create(MARKER_IMAGE, name=marker, entrypoint=["true"]).remove()

        def marker_gone() -> bool:
            return any(_name(e) == marker and _action(e) == "destroy" for e in self._snapshot())

        wait_until(marker_gone, timeout_s, f"the engine's events of marker container {marker}")
        return [e for e in self._snapshot() if _name(e) != marker]

    def naming(self, text: str) -> list[dict[str, Any]]:
        """Settled events that mention ``text`` anywhere (name, labels, mounts, id)."""
        return [e for e in self.settle() if text in json.dumps(e)]

    def containers(self, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """Settled container events of containers carrying all ``labels``."""
        return [
            e
            for e in self.settle()
            if e.get("Type") == "container"
            and all(
                e.get("Actor", {}).get("Attributes", {}).get(key) == value
                for key, value in labels.items()
            )
        ]

    def close(self) -> None:
        self._stream.close()
        self._thread.join(timeout=30)
        self._engine.close()


def _name(event: dict[str, Any]) -> str:
    name: str = event.get("Actor", {}).get("Attributes", {}).get("name", "")
    return name


def _action(event: dict[str, Any]) -> str:
    action: str = event.get("Action") or event.get("status") or ""
    return action


@contextlib.contextmanager
def watching_engine() -> Iterator[EngineEvents]:
    """An ``EngineEvents`` watch for the duration of the block."""
    watch = EngineEvents()
    try:
        yield watch
    finally:
        watch.close()
