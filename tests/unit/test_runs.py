"""Run definitions and run status: pure rules, no broker, no database."""

from __future__ import annotations

from typing import Any

import pytest

from moonmind_codex.runs import RunDefinitionError, parse_run_definition, resume_point
from moonmind_codex.runstore import run_status

GOOD: dict[str, Any] = {
    "run_id": "run-1",
    "repository": "org/repo",
    "phases": [
        {"name": "specify", "command": ["specify", "init", "--here"]},
        {"name": "plan", "command": ["codex", "exec", "plan"], "timeout_s": 1800},
        {"name": "publish", "task": "app.publish", "kwargs": {"draft": True}},
    ],
}


def test_a_good_definition_round_trips() -> None:
    run = parse_run_definition(GOOD)
    assert [p.name for p in run.phases] == ["specify", "plan", "publish"]
    assert [p.codex for p in run.phases] == [True, True, False]
    assert run.phases[1].timeout_s == 1800.0 and run.phases[2].kwargs == {"draft": True}
    assert run.key == "org/repo"
    assert parse_run_definition(run.to_dict()) == run
    assert parse_run_definition(GOOD, run_id="other").run_id == "other"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"phases": []}, "phases must be a non-empty list"),
        ({"phases": "specify"}, "phases must be a non-empty list"),
        ({"run_id": "../x"}, "run_id '../x' is not valid"),
        ({"run_id": None}, "the run has no run_id"),
        ({"colour": "blue"}, "unknown keys ['colour']"),
        ({"phases": [{"name": "a", "command": "echo hi"}]}, "a string is never split"),
        ({"phases": [{"name": "a", "command": []}]}, "non-empty list of strings"),
        ({"phases": [{"name": "a", "command": ["ok", 3]}]}, "command[1] must be a string"),
        ({"phases": [{"name": "a", "command": ["x\0y"]}]}, "without NUL bytes"),
        ({"phases": [{"name": "a"}]}, "needs exactly one of 'command'"),
        ({"phases": [{"name": "a", "command": ["x"], "task": "t"}]}, "needs exactly one"),
        ({"phases": [{"name": "a", "command": ["x"], "kwargs": {}}]}, "kwargs belongs to task"),
        ({"phases": [{"name": "a", "task": "not a name"}]}, "task must be a Celery task name"),
        ({"phases": [{"name": "a", "task": "t", "kwargs": [1]}]}, "kwargs must be a mapping"),
        ({"phases": [{"name": "a", "command": ["x"], "timeout_s": "abc"}]}, "timeout_s must be"),
        ({"phases": [{"name": "a", "command": ["x"], "timeout_s": -1}]}, "timeout_s must be"),
        ({"phases": [{"name": "a", "command": ["x"], "timeout_s": True}]}, "timeout_s must be"),
        ({"phases": [{"name": "a", "command": ["x"]}] * 2}, "must be unique within a run"),
        ({"phases": [{"name": "a b", "command": ["x"]}]}, "phases[0].name 'a b' is not valid"),
        ({"phases": [{"name": "a", "command": ["x"], "extra": 1}]}, "unknown keys ['extra']"),
        ({"phases": [["a"]]}, "phases[0] must be a mapping"),
        ({"repository": ""}, "repository must be a non-empty string"),
        ({"phases": [{"name": f"p{n}", "command": ["x"]} for n in range(65)]}, "at most 64"),
    ],
)
def test_bad_definitions_name_the_field_and_the_fix(change: dict[str, Any], message: str) -> None:
    with pytest.raises(RunDefinitionError) as caught:
        parse_run_definition({**GOOD, **change})
    assert message in str(caught.value)


def test_not_a_mapping() -> None:
    with pytest.raises(RunDefinitionError, match="must be a mapping"):
        parse_run_definition(["phases"])


def test_resume_point_is_the_first_phase_that_did_not_succeed() -> None:
    names = ["a", "b", "c"]
    assert resume_point(names, {"a": "succeeded", "b": "failed", "c": "pending"}) == 1
    assert resume_point(names, {"a": "succeeded", "b": "succeeded"}) == 2
    assert resume_point(names, {"a": "blocked"}) == 0
    assert resume_point(names, dict.fromkeys(names, "succeeded")) is None


@pytest.mark.parametrize(
    ("states", "current", "expected"),
    [
        (["succeeded", "succeeded"], "running", "succeeded"),
        (["succeeded", "pending"], "pending", "running"),
        (["pending", "pending"], "pending", "pending"),
        (["succeeded", "failed", "pending"], "running", "failed"),
        (["timed_out"], "running", "failed"),
        (["lost"], "running", "failed"),
        (["blocked", "pending"], "running", "blocked"),
        (["running"], "pending", "running"),
        (["busy"], "running", "running"),
        (["succeeded"], "cancelled", "cancelled"),
        ([], "pending", "pending"),
    ],
)
def test_run_status_from_its_phases(states: list[str], current: str, expected: str) -> None:
    assert run_status(states, current) == expected


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        # Regression corpus (issue 12): a string command ran "e"; these raised TypeErrors.
        ({"command": "echo hi"}, "command must be a non-empty list of strings"),
        ({"command": None}, "command must be a non-empty list of strings"),
        ({"command": []}, "command must be a non-empty list of strings"),
        ({"command": ["ok", 1]}, "command[1] must be a string of UTF-8 text"),
        ({"timeout_s": "abc"}, "timeout_s must be a number of seconds in (0, 604800]"),
        ({"timeout_s": 0}, "timeout_s must be a number of seconds in (0, 604800]"),
        ({"run_id": None}, "run_id None is not valid"),
        ({"run_id": "../etc"}, "run_id '../etc' is not valid"),
        ({"phase": 7}, "phase 7 is not valid"),
        ({"attempt": 0}, "attempt must be a whole number in [1, 100000]"),
        ({"attempt": True}, "attempt must be a whole number in [1, 100000]"),
        ({"position": -1}, "position must be a whole number in [0, 100000]"),
        ({"repository": ["x"]}, "repository must be a non-empty string of at most 512"),
    ],
)
def test_phase_task_arguments_are_checked_before_anything_runs(
    arguments: dict[str, Any], message: str
) -> None:
    from moonmind_codex.phase import PhaseRequest, PhaseRequestError

    values: dict[str, Any] = {"run_id": "r", "phase": "p", "command": ["true"], **arguments}
    with pytest.raises(PhaseRequestError) as caught:
        PhaseRequest(**values)
    assert message in str(caught.value)
