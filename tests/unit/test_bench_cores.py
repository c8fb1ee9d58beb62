"""The core lists the run benchmark pins its processes to (bench_runs --*-cpuset)."""

from __future__ import annotations

import os
import threading
import time

import pytest

from bench.bench_runs import parse_cpus, pin_threads, restore_threads


@pytest.mark.parametrize(
    ("text", "cores"),
    [("0", {0}), ("1", {1}), ("0,2", {0, 2}), ("0-3", {0, 1, 2, 3}), ("0-1,3", {0, 1, 3})],
)
def test_cpuset_syntax(text: str, cores: set[int]) -> None:
    assert parse_cpus(text) == cores


def test_threads_are_pinned_then_restored_with_those_started_meanwhile() -> None:
    mine = os.sched_getaffinity(0)
    one = {min(mine)}
    before = pin_threads([os.getpid()], one)
    started: list[int] = []
    release = threading.Event()

    def run() -> None:
        started.append(threading.get_native_id())
        release.wait(10)

    thread = threading.Thread(target=run)
    try:
        assert before == {os.getpid(): mine}
        assert os.sched_getaffinity(0) == one
        thread.start()
        while not started:
            time.sleep(0.01)
        assert os.sched_getaffinity(started[0]) == one  # inherited
        restore_threads(before)
        assert os.sched_getaffinity(started[0]) == mine  # restored too
    finally:
        restore_threads(before)
        release.set()
        if started:
            thread.join()
    assert os.sched_getaffinity(0) == mine
