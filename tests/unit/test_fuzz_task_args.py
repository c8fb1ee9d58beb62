"""Fuzzing task arguments: any JSON value for every argument of the phase task.

Whatever a message holds, ``PhaseRequest`` (and the registered ``codex_phase`` task in front of
it) raises only ``PhaseRequestError`` naming the argument, before anything is recorded or
started; a string is never taken as a command. The ping task validates nothing: it echoes its
one argument, whatever it is. Profiles and longer runs: see ``tests/unit/fuzz_profiles.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moonmind_codex.producer.submit import CODEX_PHASE_TASK
from moonmind_codex.settings import Settings
from moonmind_codex.worker.celery_app import PING_TASK, create_app
from moonmind_codex.worker.request import PhaseRequest, PhaseRequestError
from tests.unit.fuzz_profiles import examples
from tests.unit.fuzz_strategies import json_values

ARGUMENTS = (
    "run_id",
    "phase",
    "command",
    "timeout_s",
    "attempt",
    "position",
    "repository",
    "affinity_key",
)
GOOD: dict[str, Any] = {
    "run_id": "run-1",
    "phase": "plan",
    "command": ["codex", "exec", "plan"],
    "timeout_s": 60,
    "attempt": 1,
    "position": 0,
    "repository": "org/repo",
    "affinity_key": "org/repo",
}


class Reached(Exception):
    """The task got past its argument checks (run_phase would have run)."""


APP = create_app(Settings(broker_url="memory://", shard=0), sticky=False)


def assert_request(kwargs: dict[str, Any]) -> None:
    try:
        request = PhaseRequest(**kwargs)
    except PhaseRequestError as exc:
        message = str(exc)
        assert any(name in message for name in ARGUMENTS), message
    else:
        assert not isinstance(request.command, str)
        assert isinstance(request.command, Sequence) and request.command
        assert all(isinstance(arg, str) for arg in request.command)
        assert isinstance(request.run_id, str) and isinstance(request.phase, str)


@pytest.mark.parametrize("name", ARGUMENTS)
@examples(60)
@given(value=json_values)
def test_any_json_value_for_one_argument(name: str, value: Any) -> None:
    assert_request({**GOOD, name: value})


@examples(200)
@given(st.fixed_dictionaries({name: json_values for name in ARGUMENTS}))
def test_any_json_values_for_every_argument(kwargs: dict[str, Any]) -> None:
    assert_request(kwargs)


@examples(100)
@given(st.text())
def test_a_string_is_never_a_command(command: str) -> None:
    with pytest.raises(PhaseRequestError, match="command must be a non-empty list of strings"):
        PhaseRequest(**{**GOOD, "command": command})


@examples(150)
@given(
    st.dictionaries(
        st.sampled_from(ARGUMENTS),
        st.one_of(json_values, st.sampled_from(list(GOOD.values()))),
    )
)
def test_the_registered_task_checks_its_arguments_first(kwargs: dict[str, Any]) -> None:
    """Any subset of the task's arguments (a missing command included) into the real task."""
    task = APP.tasks[CODEX_PHASE_TASK]
    with mock.patch("moonmind_codex.worker.celery_app.run_phase", side_effect=Reached):
        try:
            task(**kwargs)
        except PhaseRequestError:
            with pytest.raises(PhaseRequestError):
                PhaseRequest(**{"run_id": None, "phase": None, "command": None, **kwargs})
        except Reached:
            assert_request(kwargs)
            assert isinstance(kwargs["command"], list) and kwargs["command"]


@examples(50)
@given(json_values)
def test_ping_echoes_any_value(value: Any) -> None:
    result = APP.tasks[PING_TASK](value)
    assert result["value"] is value
