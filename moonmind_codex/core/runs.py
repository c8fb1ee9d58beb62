"""Run definitions: an ordered list of phases, each a Codex phase or an ordinary task (pure).

A run definition comes from a small YAML or JSON file (``moonmind-codex runs submit``) or from
a host application (:func:`moonmind_codex.producer.submit.submit_run`), and is validated here before
anything is recorded or sent::

    repository: org/repo            # optional; the affinity key defaults to it, then the run id
    phases:
      - name: specify
        command: [specify, init, --here]     # a Codex phase: runs in a job container
      - name: plan
        command: [codex, exec, "write the plan"]
        timeout_s: 1800
      - name: publish
        task: myapp.publish_pull_request     # an ordinary task on the default queue
        kwargs: {draft: true}
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_PHASES = 64
MAX_COMMAND_ARGS = 256
MAX_ARG_LENGTH = 65536
# A task phase's kwargs travel as JSON (the run store, the broker): JSON values only, this deep.
MAX_KWARGS_DEPTH = 32
_MAX_JSON_INT = 2**63
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_TASK_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,254}")
_PHASE_KEYS = frozenset({"name", "command", "task", "kwargs", "timeout_s"})
_RUN_KEYS = frozenset({"run_id", "repository", "affinity_key", "phases"})


class RunDefinitionError(ValueError):
    """A run definition is not valid; the message names the field and the fix."""


@dataclass(frozen=True)
class PhaseDefinition:
    name: str
    # A Codex phase has a command; an ordinary phase names a task.
    command: tuple[str, ...] | None = None
    task: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    timeout_s: float | None = None

    @property
    def codex(self) -> bool:
        return self.command is not None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name}
        if self.command is not None:
            data["command"] = list(self.command)
        if self.task is not None:
            data["task"] = self.task
            data["kwargs"] = dict(self.kwargs)
        if self.timeout_s is not None:
            data["timeout_s"] = self.timeout_s
        return data


@dataclass(frozen=True)
class RunDefinition:
    run_id: str
    phases: tuple[PhaseDefinition, ...]
    repository: str | None = None
    affinity_key: str | None = None

    @property
    def key(self) -> str:
        """The affinity key: explicit, else the repository, else the run id."""
        return self.affinity_key or self.repository or self.run_id

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "repository": self.repository,
            "affinity_key": self.affinity_key,
            "phases": [p.to_dict() for p in self.phases],
        }


def check_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise RunDefinitionError(
            f"{what} {value!r:.80} is not valid: use 1-128 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return value


def _unencodable(text: str) -> bool:
    """True for text that no database or broker can carry (a lone surrogate, a NUL byte)."""
    if "\0" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _optional_text(data: Mapping[str, Any], key: str, where: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if (
        not isinstance(value, str)
        or not value.strip()
        or len(value) > 512
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)
        or _unencodable(value)
    ):
        raise RunDefinitionError(
            f"{where}{key} must be a non-empty string of at most 512 characters, without "
            "control characters, e.g. org/repo"
        )
    return value


def check_optional_text(value: object, name: str) -> str | None:
    """A free-text argument such as a repository: absent, or short printable text."""
    return _optional_text({name: value}, name, "")


def check_command(value: object, where: str = "") -> tuple[str, ...]:
    """A Codex phase's command: a non-empty list of strings (a string is never split)."""
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise RunDefinitionError(
            f"{where}command must be a non-empty list of strings, e.g. [codex, exec, 'plan'] "
            "(a string is never split into a command)"
        )
    if len(value) > MAX_COMMAND_ARGS:
        raise RunDefinitionError(
            f"{where}command has {len(value)} arguments (at most {MAX_COMMAND_ARGS})"
        )
    for position, arg in enumerate(value):
        if not isinstance(arg, str) or len(arg) > MAX_ARG_LENGTH or _unencodable(arg):
            raise RunDefinitionError(
                f"{where}command[{position}] must be a string of UTF-8 text without NUL bytes, "
                f"at most {MAX_ARG_LENGTH} characters"
            )
    return tuple(value)


def check_timeout(value: object, where: str = "") -> float | None:
    """A phase's timeout in seconds: in (0, 7 days], or None for the worker's default."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 7 * 86400:
        raise RunDefinitionError(f"{where}timeout_s must be a number of seconds in (0, 604800]")
    return float(value)


def _at(where: str, problem: str) -> str:
    """``problem`` (from :func:`_json_problem`) placed after the path ``where``."""
    return f"{where}{'' if problem.startswith('[') else ' '}{problem}"


def _json_problem(  # noqa: PLR0911 - one return per kind of JSON value
    value: object, depth: int = 0
) -> str | None:
    """Why ``value`` is not a JSON value the run store and the broker can carry (None: it is)."""
    if depth > MAX_KWARGS_DEPTH:
        return f"is nested more than {MAX_KWARGS_DEPTH} levels deep"
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if -_MAX_JSON_INT <= value < _MAX_JSON_INT else "is an integer beyond 64 bits"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"is {value}, not a finite number"
    if isinstance(value, str):
        return "holds a NUL byte or a lone surrogate" if _unencodable(value) else None
    if isinstance(value, list | tuple):
        return _items_problem(value, depth)
    if isinstance(value, Mapping):
        return _members_problem(value, depth)
    return f"is a {type(value).__name__}, not a JSON value"


def _items_problem(items: list[object] | tuple[object, ...], depth: int) -> str | None:
    """The first item of a JSON array that is not a JSON value, placed by its index."""
    for index, item in enumerate(items):
        problem = _json_problem(item, depth + 1)
        if problem is not None:
            return _at(f"[{index}]", problem)
    return None


def _members_problem(members: Mapping[object, object], depth: int) -> str | None:
    """The first key or value of a JSON object that is not one, placed by its key."""
    for key, item in members.items():
        if not isinstance(key, str) or _unencodable(key):
            return f"has a key {type(key).__name__} {key!r:.40}, not a string"
        problem = _json_problem(item, depth + 1)
        if problem is not None:
            return _at(f"[{key!r:.40}]", problem)
    return None


def _phase(data: object, position: int) -> PhaseDefinition:
    where = f"phases[{position}]."
    if not isinstance(data, Mapping):
        raise RunDefinitionError(f"phases[{position}] must be a mapping with a name and a command")
    unknown = set(data) - _PHASE_KEYS
    if unknown:
        raise RunDefinitionError(
            f"{where[:-1]} has unknown keys {sorted(map(str, unknown))}; allowed: "
            f"{sorted(_PHASE_KEYS)}"
        )
    name = check_id(data.get("name"), f"{where}name")
    timeout_s = check_timeout(data.get("timeout_s"), where)
    has_command, has_task = data.get("command") is not None, data.get("task") is not None
    if has_command == has_task:
        raise RunDefinitionError(
            f"{where[:-1]} ({name}) needs exactly one of 'command' (a Codex phase) or 'task' "
            "(an ordinary Celery task)"
        )
    if has_command:
        if data.get("kwargs") is not None:
            raise RunDefinitionError(f"{where}kwargs belongs to task phases only")
        return PhaseDefinition(
            name=name, command=check_command(data["command"], where), timeout_s=timeout_s
        )
    task = data["task"]
    if not isinstance(task, str) or not _TASK_NAME.fullmatch(task):
        raise RunDefinitionError(f"{where}task must be a Celery task name such as app.publish")
    kwargs = data.get("kwargs")
    kwargs = {} if kwargs is None else kwargs
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise RunDefinitionError(f"{where}kwargs must be a mapping with string keys")
    problem = _json_problem(kwargs)
    if problem is not None:
        raise RunDefinitionError(
            f"{_at(where + 'kwargs', problem)}: kwargs travel as JSON, so use strings, numbers, "
            "true/false, null, lists and mappings (quote a date: '2024-01-01')"
        )
    return PhaseDefinition(name=name, task=task, kwargs=dict(kwargs), timeout_s=timeout_s)


def parse_run_definition(data: object, *, run_id: str | None = None) -> RunDefinition:
    """Validate ``data`` (parsed YAML/JSON) as a run; ``run_id`` overrides the file's."""
    if not isinstance(data, Mapping):
        raise RunDefinitionError("a run definition must be a mapping with a 'phases' list")
    unknown = set(data) - _RUN_KEYS
    if unknown:
        raise RunDefinitionError(
            f"unknown keys {sorted(map(str, unknown))} in the run definition; allowed: "
            f"{sorted(_RUN_KEYS)}"
        )
    chosen = run_id if run_id is not None else data.get("run_id")
    if chosen is None:
        raise RunDefinitionError("the run has no run_id: put one in the file or pass --run-id")
    checked_id = check_id(chosen, "run_id")
    phases = data.get("phases")
    if not isinstance(phases, Sequence) or isinstance(phases, str) or not phases:
        raise RunDefinitionError("phases must be a non-empty list")
    if len(phases) > MAX_PHASES:
        raise RunDefinitionError(f"a run has at most {MAX_PHASES} phases, this one {len(phases)}")
    parsed = tuple(_phase(p, n) for n, p in enumerate(phases))
    names = [p.name for p in parsed]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise RunDefinitionError(f"phase names must be unique within a run: {repeated} repeat")
    return RunDefinition(
        run_id=checked_id,
        phases=parsed,
        repository=_optional_text(data, "repository", ""),
        affinity_key=_optional_text(data, "affinity_key", ""),
    )


def resume_point(phase_names: Sequence[str], latest_status: Mapping[str, str]) -> int | None:
    """Position of the first phase whose latest attempt did not succeed; None when all did."""
    for position, name in enumerate(phase_names):
        if latest_status.get(name) != "succeeded":
            return position
    return None
