"""Fuzzing run definitions: any YAML/JSON value, and any text as a definition file.

``parse_run_definition`` raises only ``RunDefinitionError`` naming the field and the fix; a
definition it accepts can be stored and sent (it survives JSON and parses back to itself).
``decode_definition`` (what ``moonmind-codex runs submit`` reads a file with) turns any text into
a value or a ``RunDefinitionError``. Profiles and longer runs: see
``tests/unit/fuzz_profiles.py``.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from moonmind_codex.core.runs import RunDefinition, RunDefinitionError, parse_run_definition
from moonmind_codex.producer.run_file import decode_definition
from tests.unit.fuzz_profiles import examples
from tests.unit.fuzz_strategies import json_values, yaml_values

RUN_KEYS = ("run_id", "repository", "affinity_key", "phases")
PHASE_KEYS = ("name", "command", "task", "kwargs", "timeout_s")
ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,20}\Z")


def assert_definition(data: Any, run_id: str | None = None) -> RunDefinition | None:
    try:
        run = parse_run_definition(data, run_id=run_id)
    except RunDefinitionError as exc:
        assert str(exc).strip()
        return None
    # Accepted: it is stored as JSON and sent as JSON, and reads back as the same run.
    text = json.dumps(run.to_dict(), allow_nan=False)
    assert parse_run_definition(json.loads(text)) == run
    assert all(p.command is None or not isinstance(p.command, str) for p in run.phases)
    return run


@st.composite
def run_shaped(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> dict[str, Any]:
    """Mappings with a run's keys, each holding a plausible or an arbitrary value."""
    phase_values = {
        "name": st.one_of(ids, values),
        "command": st.one_of(st.lists(st.text(max_size=20), max_size=4), st.text(), values),
        "task": st.one_of(st.just("app.publish"), values),
        "kwargs": st.one_of(st.dictionaries(st.text(max_size=8), values, max_size=3), values),
        "timeout_s": st.one_of(st.floats(), st.integers(), values),
    }

    @st.composite
    def phase(draw_phase: st.DrawFn) -> dict[str, Any]:
        chosen = draw_phase(st.sets(st.sampled_from(PHASE_KEYS)))
        return {key: draw_phase(phase_values[key]) for key in sorted(chosen)}

    run_values = {
        "run_id": st.one_of(ids, values),
        "repository": st.one_of(st.text(max_size=30), values),
        "affinity_key": st.one_of(st.text(max_size=30), values),
        "phases": st.one_of(st.lists(st.one_of(phase(), values), max_size=4), values),
    }
    chosen = draw(st.sets(st.sampled_from(RUN_KEYS)))
    return {key: draw(run_values[key]) for key in sorted(chosen)}


@examples(200)
@given(yaml_values)
def test_any_yaml_value_is_a_run_or_a_clear_error(data: Any) -> None:
    assert_definition(data)


@examples(400)
@given(run_shaped(yaml_values), st.none() | st.text(max_size=20))
def test_run_shaped_values_are_a_run_or_a_clear_error(data: Any, run_id: str | None) -> None:
    assert_definition(data, run_id)


@examples(200)
@given(run_shaped(json_values))
def test_run_shaped_json_is_a_run_or_a_clear_error(data: Any) -> None:
    assert_definition(data)


@examples(100)
@given(
    ids,
    st.lists(
        st.tuples(ids, st.lists(st.text(max_size=20), min_size=1, max_size=4)),
        min_size=1,
        max_size=5,
        unique_by=lambda p: p[0],
    ),
)
def test_good_runs_are_accepted(run_id: str, phases: list[tuple[str, list[str]]]) -> None:
    commands = [c for _, c in phases]
    data = {"run_id": run_id, "phases": [{"name": n, "command": c} for n, c in phases]}
    if any("\0" in a or not _utf8(a) for c in commands for a in c):
        return  # refused for its text, checked in the tests above
    run = assert_definition(data)
    assert run is not None and [list(p.command or ()) for p in run.phases] == commands


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@examples(300)
@given(st.text(max_size=200))
def test_any_text_is_a_value_or_a_clear_error(text: str) -> None:
    try:
        value = decode_definition(text, "run.yaml")
    except RunDefinitionError as exc:
        assert str(exc).startswith("run.yaml ") and "fix the file" in str(exc)
    else:
        assert_definition(value)


yaml_fragments = st.sampled_from(
    [
        "run_id: r1\n",
        "phases:\n",
        "  - name: a\n",
        "    command: [codex, exec, x]\n",
        "    command: echo hi\n",
        "    task: app.publish\n",
        "    kwargs: {when: 2024-01-01}\n",
        "    kwargs: {when: 2024-02-30}\n",
        "    timeout_s: abc\n",
        "    timeout_s: .nan\n",
        "[",
        "{",
        "&a [*a]\n",
        "? [a]\n: b\n",
        "!!binary xyz\n",
        "!!python/object:os.system\n",
        "- 0x1F\n",
        "- 1_000\n",
        "\t",
        "%YAML 1.1\n---\n",
    ]
)


@examples(300)
@given(st.lists(yaml_fragments | st.text(max_size=10), max_size=12).map("".join))
def test_yaml_like_text_is_a_value_or_a_clear_error(text: str) -> None:
    test_any_text_is_a_value_or_a_clear_error.hypothesis.inner_test(text)  # type: ignore[attr-defined]
