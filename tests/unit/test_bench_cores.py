"""The core lists the run benchmark pins its processes to (bench_runs --*-cpuset)."""

from __future__ import annotations

import os

import pytest

from bench.bench_runs import parse_cpus, pin_threads, restore_threads


@pytest.mark.parametrize(
    ("text", "cores"),
    [("0", {0}), ("1", {1}), ("0,2", {0, 2}), ("0-3", {0, 1, 2, 3}), ("0-1,3", {0, 1, 3})],
)
def test_cpuset_syntax(text: str, cores: set[int]) -> None:
    assert parse_cpus(text) == cores


def test_threads_are_pinned_then_restored() -> None:
    mine = os.sched_getaffinity(0)
    one = {min(mine)}
    before = pin_threads([os.getpid()], one)
    try:
        assert before and all(cores == mine for cores in before.values())
        assert os.sched_getaffinity(0) == one
    finally:
        restore_threads(before)
    assert os.sched_getaffinity(0) == mine
