"""The bad inputs of issue 12 and those fuzzing found, kept as plain regression tests.

Each case names its surface's one error type and checks the message says what is wrong and the
fix; CLI cases check the documented exit status and that nothing past validation was reached.
"""

from __future__ import annotations

import base64
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from moonmind_codex.core.authfile import inspect_auth_json
from moonmind_codex.core.exitcodes import ExitCode
from moonmind_codex.core.runs import RunDefinitionError, parse_run_definition
from moonmind_codex.engine.login import LoginDataError, check_login, read_login_source
from moonmind_codex.producer.run_file import decode_definition
from moonmind_codex.settings import Settings, SettingsError, load_settings
from moonmind_codex.worker.request import PhaseRequest, PhaseRequestError
from tests.unit.fuzz_strategies import now
from tests.unit.test_fuzz_cli import run
from tests.unit.test_fuzz_task_args import APP, GOOD, Reached

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins" / "filter"))
from moonmind_codex_inventory import inventory_errors

NESTED = b"[" * 100000
YEAR_ONE = json.dumps({"OPENAI_API_KEY": "sk-x", "last_refresh": "0001-01-01T00:00:00+01:00"})
LONG_NUMBER = b'{"last_refresh": ' + b"9" * 5000 + b"}"
NESTED_JWT = "a." + base64.urlsafe_b64encode(NESTED).decode() + ".c"
AUTH_CASES = {
    "deep nesting": (NESTED, "its JSON is nested too deeply"),
    "year 1 with an offset": (YEAR_ONE.encode(), "last_refresh is not an ISO 8601 timestamp"),
    "5000-digit number": (LONG_NUMBER, "a number too long to read"),
    "nested JWT payload": (
        json.dumps({"tokens": {"access_token": NESTED_JWT}}).encode(),
        "missing refresh_token",
    ),
    "not UTF-8": (b"\xff{}", "not UTF-8 text (bad byte at offset 0)"),
}


@pytest.mark.parametrize(("raw", "problem"), AUTH_CASES.values(), ids=AUTH_CASES)
def test_bad_auth_files_are_refused_clearly(raw: bytes, problem: str) -> None:
    inspection = inspect_auth_json(raw, now())
    assert not inspection.logged_in
    with pytest.raises(LoginDataError, match="volume codex_auth_0 was not changed") as refused:
        check_login(Settings(), 0, raw, "auth.json")
    assert problem in str(refused.value)


@pytest.mark.parametrize("raw", [NESTED, YEAR_ONE.encode()], ids=["nested", "year-1"])
def test_cli_login_refuses_bad_files_with_65_before_the_engine(raw: bytes) -> None:
    code, message = run(["login", "--shard", "2", "--from-file", "-"], raw)
    assert code == ExitCode.DATAERR == 65
    assert "standard input is not a usable Codex login" in message


def test_login_paths_that_cannot_be_read() -> None:
    with pytest.raises(LoginDataError, match="cannot read a\\x00b: not a usable path"):
        read_login_source(Path("a\0b"), "a\0b")
    code, message = run(["login", "--shard", "0", "--from-file", "/nonexistent/auth.json"])
    assert code == 65 and "cannot read /nonexistent/auth.json: No such file" in message
    with tempfile.TemporaryDirectory() as directory:
        big = Path(directory, "auth.json")
        big.write_bytes(b" " * (1 << 20) + b"{}")
        with pytest.raises(LoginDataError, match="larger than 1048576 bytes"):
            read_login_source(big, str(big))


TASK_CASES = {
    "command as a string": ({"command": "echo hi"}, "command must be a non-empty list"),
    "timeout_s abc": ({"timeout_s": "abc"}, "timeout_s must be a number of seconds in (0, 604800]"),
    "missing command": ({"command": None}, "command must be a non-empty list"),
    "attempt as text": ({"attempt": "1"}, "attempt must be a whole number in [1, 100000]"),
}


@pytest.mark.parametrize(("change", "message"), TASK_CASES.values(), ids=TASK_CASES)
def test_bad_task_arguments(change: dict[str, Any], message: str) -> None:
    with pytest.raises(PhaseRequestError, match=re.escape(message)):
        PhaseRequest(**{**GOOD, **change})


def test_the_phase_task_without_a_command_is_refused_before_anything() -> None:
    from unittest import mock

    with mock.patch("moonmind_codex.worker.celery_app.run_phase", side_effect=Reached):
        with pytest.raises(PhaseRequestError, match="command must be a non-empty list"):
            APP.tasks["moonmind_codex.codex_phase"](run_id="r", phase="p")
        with pytest.raises(PhaseRequestError, match="command must be a non-empty list"):
            APP.tasks["moonmind_codex.codex_phase"](run_id="r", phase="p", command="echo hi")


def phases(**phase: Any) -> dict[str, Any]:
    return {"run_id": "r1", "phases": [{"name": "a", **phase}]}


RUN_CASES = {
    "command as a string": (phases(command="echo hi"), "a string is never split"),
    "timeout_s abc": (phases(command=["x"], timeout_s="abc"), "timeout_s must be a number"),
    "missing command": (phases(), "needs exactly one of 'command'"),
    "kwargs a list": (phases(task="app.t", kwargs=[]), "kwargs must be a mapping"),
    "kwargs a date": (
        decode_definition("run_id: r\nphases: [{name: a, task: app.t, kwargs: {d: 2024-01-01}}]",
                          "run.yaml"),
        "kwargs['d'] is a date, not a JSON value",
    ),
    "kwargs nan": (phases(task="app.t", kwargs={"x": float("nan")}), "is nan, not a finite"),
    "NUL in repository": ({**phases(command=["x"]), "repository": "a\0b"}, "control characters"),
    "lone surrogate in command": (phases(command=["\udcff"]), "UTF-8 text without NUL"),
}  # fmt: skip


@pytest.mark.parametrize(("data", "message"), RUN_CASES.values(), ids=RUN_CASES)
def test_bad_run_definitions(data: Any, message: str) -> None:
    with pytest.raises(RunDefinitionError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_run_definition(data)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("run_id: r\nwhen: 2024-02-30\n", "an impossible date such as 2024-02-30"),
        ("[" * 5000, "nested too deeply"),
        ("x: " + "9" * 5000, "a number too long to read"),
        ("!!python/object:os.system {}\n", "is not valid YAML or JSON at line 1"),
    ],
)
def test_bad_definition_files(text: str, message: str) -> None:
    with pytest.raises(RunDefinitionError, match=message):
        decode_definition(text, "run.yaml")
    code, err = run(["runs", "submit", "-"], text.encode())
    assert code == ExitCode.DATAERR and message in err  # the run store was never opened


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"JOB_TIMEOUT_SECONDS": "inf"}, "JOB_TIMEOUT_SECONDS='inf' is not a finite number"),
        ({"BUSY_RETRY_SECONDS": "1e400"}, "BUSY_RETRY_SECONDS='1e400' is not a finite number"),
        ({"JOB_UID": "9" * 30}, "JOB_UID=" + "9" * 30 + " must be <= 4294967294"),
        ({"BROKER_URL_FILE": "a\0b"}, "BROKER_URL_FILE='a\\x00b' cannot be read"),
    ],
)
def test_bad_settings(env: dict[str, str], message: str) -> None:
    full = {"MOONMIND_CODEX_ENV_FILE": ""} | {f"MOONMIND_CODEX_{k}": v for k, v in env.items()}
    with pytest.raises(SettingsError) as refused:
        load_settings(full)
    assert message in str(refused.value)


def test_a_file_twin_that_is_not_text() -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory, "url")
        path.write_bytes(b"\xff\xfe")
        env = {"MOONMIND_CODEX_ENV_FILE": "", "MOONMIND_CODEX_BROKER_URL_FILE": str(path)}
        with pytest.raises(SettingsError, match="cannot be read \\(not UTF-8 text\\)"):
            load_settings(env)


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["login-check", "--shard", "0", "--shard", "3"], 78, "shard 3 is out of range"),
        (["route", " "], 64, "the affinity key must not be blank"),
        (["enqueue", "--run-id", "bad id", "--phase", "p", "--", "x"], 65, "--run-id 'bad id'"),
        (["enqueue", "--run-id", "r", "--phase", "p", "--timeout", "nan", "--", "x"], 65,
         "--timeout: timeout_s must be a number of seconds"),
        (["enqueue", "--run-id", "r", "--phase", "p", "--timeout", "0", "--", "x"], 65,
         "timeout_s must be a number"),
        (["runs", "show", "../etc"], 65, "run id '../etc' is not valid"),
    ],
)  # fmt: skip
def test_cli_refuses_before_touching_anything(argv: list[str], code: int, message: str) -> None:
    status, err = run(argv)
    assert status == code and message in err


def test_inventory_edge_cases() -> None:
    huge = inventory_errors(["a"], {"a": {"moonmind_codex_shards": [0]}}, ["mq"], 10**12, "")
    assert len(huge) == 21 and huge[-1].startswith("999999999979 more shards after shard 20 ")
    odd = inventory_errors(["a"], {"a": "text"}, ["mq"], 1, "")
    assert odd[0].startswith("host a: its variables are str, not a mapping")


def test_yaml_aliases_in_a_run_definition_are_refused_before_they_expand() -> None:
    from moonmind_codex.core.runs import RunDefinitionError
    from moonmind_codex.producer.run_file import decode_definition

    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(20)
    )
    with pytest.raises(RunDefinitionError, match=r"uses YAML aliases \(\*name\)"):
        decode_definition(laughs, "run.yaml")
    assert decode_definition("run_id: r\nphases: []\n", "run.yaml") == {"run_id": "r", "phases": []}
