"""A run definition read from a file or standard input: YAML (or JSON, a subset of it), refused
before any value is built when it could not be a run (aliases, deep nesting)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from moonmind_codex.core.messages import unreadable_reason


def read_definition(name: str) -> Any:
    from moonmind_codex.core.runs import RunDefinitionError

    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        why = unreadable_reason(exc)
        raise RunDefinitionError(
            f"cannot read {name!r:.200} ({why}); give a YAML or JSON file, or '-' for standard "
            "input"
        ) from None
    return decode_definition(text, name)


MAX_DEFINITION_DEPTH = 64


def _check_yaml_shape(yaml: Any, text: str, name: str, fix: str) -> None:
    """Refuse aliases and deep nesting from the event stream, before any value is built.

    A few lines of aliases can expand to billions of values once the run is stored ("billion
    laughs"); deep nesting would exhaust the recursion of the value builder.
    """
    from moonmind_codex.core.runs import RunDefinitionError

    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            raise RunDefinitionError(
                f"{name} uses YAML aliases (*name); write each value out; {fix}"
            )
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEFINITION_DEPTH:
                raise RunDefinitionError(f"{name} is nested too deeply to be a run; {fix}")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def decode_definition(text: str, name: str) -> Any:
    """The YAML (or JSON) value of a run definition's text; RunDefinitionError when not one."""
    import yaml

    from moonmind_codex.core.runs import RunDefinitionError

    fix = "fix the file (a mapping with run_id and a phases list; see docs/runbook.md)"
    try:
        _check_yaml_shape(yaml, text, name, fix)
        # YAML is a superset of JSON: one parser for both.
        return yaml.safe_load(text)
    except RunDefinitionError:
        raise
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise RunDefinitionError(f"{name} is not valid YAML or JSON{at}; {fix}") from None
    except RecursionError:
        raise RunDefinitionError(f"{name} is nested too deeply to be a run; {fix}") from None
    except ValueError:
        # A scalar YAML resolves but cannot build: a date such as 2024-02-30, an integer of
        # more than 4300 digits. (str(exc) may quote the file: not shown.)
        raise RunDefinitionError(
            f"{name} holds a value that is not valid (an impossible date such as 2024-02-30, or "
            f"a number too long to read); {fix}"
        ) from None
