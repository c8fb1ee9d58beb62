"""Run definitions and run status: pure rules, no broker, no database."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from moonmind_codex.core.runs import RunDefinitionError, parse_run_definition, resume_point
from moonmind_codex.core.states import run_status

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


ID_RULE = "use 1-128 letters, digits, '_', '.' or '-', starting with a letter or digit"
COMMAND_RULE = (
    "command must be a non-empty list of strings, e.g. [codex, exec, 'plan'] (a string is never "
    "split into a command)"
)
ARG_RULE = "must be a string of UTF-8 text without NUL bytes, at most 65536 characters"
TEXT_RULE = (
    "must be a non-empty string of at most 512 characters, without control characters, e.g. "
    "org/repo"
)
TIMEOUT_RULE = "timeout_s must be a number of seconds in (0, 604800]"
ONE_OF = "needs exactly one of 'command' (a Codex phase) or 'task' (an ordinary Celery task)"
FIRST = {"name": "first", "command": ["codex"]}


def second(phase: object) -> dict[str, Any]:
    """A definition whose second phase is ``phase`` (so the message must name position 1)."""
    return {"phases": [FIRST, phase]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"phases": []}, "phases must be a non-empty list"),
        ({"phases": "specify"}, "phases must be a non-empty list"),
        ({"run_id": "../x"}, f"run_id '../x' is not valid: {ID_RULE}"),
        ({"run_id": None}, "the run has no run_id: put one in the file or pass --run-id"),
        (
            {"colour": "blue"},
            "unknown keys ['colour'] in the run definition; allowed: ['affinity_key', 'phases', "
            "'repository', 'run_id']",
        ),
        (second({"name": "a", "command": "echo hi"}), f"phases[1].{COMMAND_RULE}"),
        (second({"name": "a", "command": []}), f"phases[1].{COMMAND_RULE}"),
        (second({"name": "a", "command": ["ok", 3]}), f"phases[1].command[1] {ARG_RULE}"),
        (second({"name": "a", "command": ["x\0y"]}), f"phases[1].command[0] {ARG_RULE}"),
        (second({"name": "a"}), f"phases[1] (a) {ONE_OF}"),
        (second({"name": "a", "command": ["x"], "task": "t"}), f"phases[1] (a) {ONE_OF}"),
        (
            second({"name": "a", "command": ["x"], "kwargs": {}}),
            "phases[1].kwargs belongs to task phases only",
        ),
        (
            second({"name": "a", "task": "not a name"}),
            "phases[1].task must be a Celery task name such as app.publish",
        ),
        (
            second({"name": "a", "task": "t", "kwargs": [1]}),
            "phases[1].kwargs must be a mapping with string keys",
        ),
        (
            second({"name": "a", "task": "t", "kwargs": {1: "x"}}),
            "phases[1].kwargs must be a mapping with string keys",
        ),
        (second({"name": "a", "command": ["x"], "timeout_s": "abc"}), f"phases[1].{TIMEOUT_RULE}"),
        (second({"name": "a", "command": ["x"], "timeout_s": -1}), f"phases[1].{TIMEOUT_RULE}"),
        (second({"name": "a", "command": ["x"], "timeout_s": True}), f"phases[1].{TIMEOUT_RULE}"),
        (second({"name": "a", "task": "t", "timeout_s": 0}), f"phases[1].{TIMEOUT_RULE}"),
        (
            {"phases": [{"name": "a", "command": ["x"]}] * 2},
            "phase names must be unique within a run: ['a'] repeat",
        ),
        (
            second({"name": "a b", "command": ["x"]}),
            f"phases[1].name 'a b' is not valid: {ID_RULE}",
        ),
        (
            second({"name": "a", "command": ["x"], "extra": 1}),
            "phases[1] has unknown keys ['extra']; allowed: ['command', 'kwargs', 'name', 'task', "
            "'timeout_s']",
        ),
        (second(["a"]), "phases[1] must be a mapping with a name and a command"),
        # A trailing newline is not part of a name ('$' alone would accept it).
        ({"run_id": "run-1\n"}, f"run_id 'run-1\\n' is not valid: {ID_RULE}"),
        (
            second({"name": "plan\n", "command": ["x"]}),
            f"phases[1].name 'plan\\n' is not valid: {ID_RULE}",
        ),
        (
            second({"name": "a", "task": "app.publish\n"}),
            "phases[1].task must be a Celery task name such as app.publish",
        ),
        ({"repository": ""}, f"repository {TEXT_RULE}"),
        ({"affinity_key": "a\tb"}, f"affinity_key {TEXT_RULE}"),
        (
            {"phases": [{"name": f"p{n}", "command": ["x"]} for n in range(65)]},
            "a run has at most 64 phases, this one 65",
        ),
    ],
)
def test_bad_definitions_name_the_field_and_the_fix(change: dict[str, Any], message: str) -> None:
    with pytest.raises(RunDefinitionError) as caught:
        parse_run_definition({**GOOD, **change})
    assert str(caught.value) == message


def test_not_a_mapping() -> None:
    with pytest.raises(RunDefinitionError) as caught:
        parse_run_definition(["phases"])
    assert str(caught.value) == "a run definition must be a mapping with a 'phases' list"


def test_the_affinity_key_is_explicit_else_the_repository_else_the_run_id() -> None:
    run = parse_run_definition({**GOOD, "affinity_key": "team-a"})
    assert (run.affinity_key, run.repository, run.key) == ("team-a", "org/repo", "team-a")
    assert parse_run_definition(run.to_dict()) == run
    bare = parse_run_definition({"run_id": "r-9", "phases": [FIRST]})
    assert (bare.affinity_key, bare.repository, bare.key) == (None, None, "r-9")


def test_a_task_phase_keeps_its_timeout_and_gets_empty_kwargs_by_default() -> None:
    run = parse_run_definition(
        {**GOOD, **second({"name": "publish", "task": "app.publish", "timeout_s": 60})}
    )
    publish = run.phases[1]
    assert (publish.task, publish.kwargs, publish.timeout_s) == ("app.publish", {}, 60.0)
    assert publish.to_dict() == {
        "name": "publish",
        "task": "app.publish",
        "kwargs": {},
        "timeout_s": 60.0,
    }
    assert run.phases[0].to_dict() == {"name": "first", "command": ["codex"]}


def phase_with(**fields: Any) -> dict[str, Any]:
    return second({"name": "p", **fields})


def accepted(change: dict[str, Any]) -> bool:
    try:
        parse_run_definition({**GOOD, **change})
    except RunDefinitionError:
        return False
    return True


@pytest.mark.parametrize(
    ("change", "ok"),
    [
        # Free text (repository, affinity key): 512 characters, printable.
        ({"repository": "r" * 512}, True),
        ({"repository": "r" * 513}, False),
        ({"repository": "org/a b~"}, True),  # space (0x20) and tilde (0x7e) are printable
        ({"repository": "org/\x1f"}, False),
        ({"repository": "org/\x7f"}, False),
        ({"repository": "org/\x80"}, True),
        ({"repository": "org/\ud800"}, False),  # a lone surrogate: no database can store it
        ({"repository": "org/\0"}, False),
        ({"affinity_key": "k" * 513}, False),
        # A command: at most 256 arguments of at most 65536 characters, UTF-8 without NUL.
        (phase_with(command=["a"] * 256), True),
        (phase_with(command=["a"] * 257), False),
        (phase_with(command=["a" * 65536]), True),
        (phase_with(command=["a" * 65537]), False),
        (phase_with(command=["\ud800"]), False),
        (phase_with(command=("codex", "exec")), True),  # any sequence, not only a list
        # A timeout: seconds in (0, 7 days].
        (phase_with(command=["x"], timeout_s=0.5), True),
        (phase_with(command=["x"], timeout_s=604800), True),
        (phase_with(command=["x"], timeout_s=604800.5), False),
        (phase_with(command=["x"], timeout_s=0), False),
        # 64 phases.
        ({"phases": [{"name": f"p{n}", "command": ["x"]} for n in range(64)]}, True),
    ],
)
def test_the_limits_of_a_definition_are_exact(change: dict[str, Any], ok: bool) -> None:
    assert accepted(change) is ok


def kwargs_problem(kwargs: Any) -> str | None:
    """The message for a task phase with these kwargs (None: accepted)."""
    try:
        parse_run_definition({**GOOD, **phase_with(task="app.t", kwargs=kwargs)})
    except RunDefinitionError as exc:
        return str(exc)
    return None


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


JSON_ADVICE = (
    ": kwargs travel as JSON, so use strings, numbers, true/false, null, lists and mappings "
    "(quote a date: '2024-01-01')"
)


@pytest.mark.parametrize(
    ("kwargs", "where_and_problem"),
    [
        ({"a": None, "b": True, "c": 1.5, "d": "x", "e": [1, {"f": []}]}, None),
        ({"n": 2**63 - 1, "m": -(2**63)}, None),
        ({"n": 2**63}, "['n'] is an integer beyond 64 bits"),
        ({"n": -(2**63) - 1}, "['n'] is an integer beyond 64 bits"),
        ({"x": float("nan")}, "['x'] is nan, not a finite number"),
        ({"x": [0, float("inf")]}, "['x'][1] is inf, not a finite number"),
        ({"x": "a\0b"}, "['x'] holds a NUL byte or a lone surrogate"),
        ({"x": {"y": {"\ud800": 1}}}, "['x']['y'] has a key str '\\ud800', not a string"),
        ({"x": {3: "three"}}, "['x'] has a key int 3, not a string"),
        ({"x": [1, {2, 3}]}, "['x'][1] is a set, not a JSON value"),
        ({"when": date(2024, 1, 1)}, "['when'] is a date, not a JSON value"),
        ({"deep": nested(31)}, None),
        ({"deep": nested(32)}, "['deep']" + "[0]" * 32 + " is nested more than 32 levels deep"),
    ],
)
def test_task_kwargs_must_be_json_and_the_message_points_at_the_value(
    kwargs: Any, where_and_problem: str | None
) -> None:
    expected = (
        None if where_and_problem is None else (f"phases[1].kwargs{where_and_problem}{JSON_ADVICE}")
    )
    assert kwargs_problem(kwargs) == expected


def test_a_free_text_argument_is_checked_alone() -> None:
    from moonmind_codex.core.runs import check_command, check_optional_text, check_timeout

    assert check_optional_text(None, "repository") is None
    assert check_optional_text("org/repo", "repository") == "org/repo"
    with pytest.raises(RunDefinitionError) as caught:
        check_optional_text("", "repository")
    assert str(caught.value) == f"repository {TEXT_RULE}"
    # Without a position, the messages start with the field itself.
    with pytest.raises(RunDefinitionError) as caught:
        check_command([])
    assert str(caught.value) == COMMAND_RULE
    with pytest.raises(RunDefinitionError) as caught:
        check_command(["a"] * 257)
    assert str(caught.value) == "command has 257 arguments (at most 256)"
    with pytest.raises(RunDefinitionError) as caught:
        check_timeout(-1)
    assert str(caught.value) == TIMEOUT_RULE


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
    from moonmind_codex.worker.request import PhaseRequest, PhaseRequestError

    values: dict[str, Any] = {"run_id": "r", "phase": "p", "command": ["true"], **arguments}
    with pytest.raises(PhaseRequestError) as caught:
        PhaseRequest(**values)
    assert message in str(caught.value)
