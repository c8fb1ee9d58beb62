"""Fuzzing the command line: any strings as arguments, any bytes on standard input.

Every command is run through ``main(argv)`` with the engine, the run store, the broker and the
worker replaced by a stub that raises ``Reached``: an input is either refused before any of
them is touched, with one line on stderr and a status from :mod:`moonmind_codex.core.exitcodes`
(64 usage, 65 data, 78 config; 0 for --help/--version), or it reached the stub. No traceback,
never another exception. Profiles and longer runs: see ``tests/unit/fuzz_profiles.py``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from unittest import mock

from hypothesis import given
from hypothesis import strategies as st

from moonmind_codex.cli.app import main
from moonmind_codex.core.authfile import inspect_auth_json
from moonmind_codex.core.exitcodes import ExitCode
from tests.unit.fuzz_profiles import examples
from tests.unit.fuzz_strategies import SECRET_PREFIX, json_values, secrets

REFUSED = {ExitCode.USAGE, ExitCode.DATAERR, ExitCode.CONFIG}
SHARD_COMMANDS = ["preflight", "login-check", "worker", "login", "repair", "export-login",
                  "clear-login"]  # fmt: skip
COMMANDS = [*SHARD_COMMANDS, "route", "enqueue", "runs", "db", "status", "metrics", "login-fence"]


class Reached(Exception):
    """The command got past its validation to the engine, the store, the broker or a worker."""


@contextlib.contextmanager
def isolated(stdin: bytes) -> Iterator[tuple[io.TextIOWrapper, io.StringIO]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOONMIND_CODEX_")}
    env.update({"MOONMIND_CODEX_ENV_FILE": "", "MOONMIND_CODEX_SHARD_COUNT": "3"})
    # stdout has a binary buffer, as a terminal's has (export-login writes bytes to it).
    out, err = io.TextIOWrapper(io.BytesIO()), io.StringIO()
    stub = mock.Mock(side_effect=Reached)
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.dict(os.environ, env, clear=True))
        for target in (
            "moonmind_codex.engine.client.connect",
            "moonmind_codex.engine.preflight.run_preflight",
            "moonmind_codex.engine.preflight.run_preflights",
            "moonmind_codex.worker.entry.run_worker",
            "moonmind_codex.worker.celery_app.create_app",
            "moonmind_codex.cli.common.run_store",
            "moonmind_codex.store.runstore.RunStore.open_existing",
        ):
            stack.enter_context(mock.patch(target, stub))
        stack.enter_context(mock.patch("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin))))
        stack.enter_context(contextlib.redirect_stdout(out))
        stack.enter_context(contextlib.redirect_stderr(err))
        yield out, err


def run(argv: list[str], stdin: bytes = b"") -> tuple[int | None, str]:
    """(exit status, stderr); status None when the command reached a stub."""
    with isolated(stdin) as (_, err):
        try:
            code: int | None = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else ExitCode.USAGE
        except Reached:
            code = None
    message = err.getvalue()
    assert "Traceback" not in message
    if code is not None:
        assert code == ExitCode.OK or code in REFUSED, (code, message)
        if code != ExitCode.OK:
            assert message.startswith("moonmind-codex") and message.strip(), message
    return code, message


arguments = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["-", "--", "--shard", "--json", "--help", "0", "1", "3", "-1", "nan"]),
)


@examples(300)
@given(st.sampled_from(COMMANDS), st.lists(arguments, max_size=6))
def test_any_arguments_to_any_command(command: str, argv: list[str]) -> None:
    run([command, *argv])


@examples(150)
@given(st.lists(arguments, max_size=6))
def test_any_argument_list(argv: list[str]) -> None:
    run(argv)


@examples(200)
@given(st.sampled_from(SHARD_COMMANDS), st.text(max_size=12) | st.integers().map(str))
def test_any_shard_value(command: str, shard: str) -> None:
    code, message = run([command, "--shard", shard])
    try:
        valid = 0 <= int(shard, 10) < 3
    except ValueError:
        valid = False
    if not valid:
        assert code in (ExitCode.USAGE, ExitCode.CONFIG), message
        assert "shard" in message


@examples(150)
@given(st.text(max_size=30), st.none() | st.text(max_size=8) | st.integers().map(str))
def test_route_any_key_and_shard_count(key: str, shards: str | None) -> None:
    argv = ["route", "--json", "--", key]
    if shards is not None:
        argv[1:1] = ["--shards", shards]
    code, message = run(argv)
    assert code is not None  # route touches nothing
    if key.strip() == "" and shards is None:
        assert code == ExitCode.USAGE and "affinity key" in message


@examples(200)
@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_login_from_standard_input_checks_the_file_first(raw: bytes) -> None:
    code, message = run(["login", "--shard", "1", "--from-file", "-"], raw)
    logged_in = inspect_auth_json(raw, datetime.now(UTC)).logged_in
    assert (code is None) == logged_in, message  # only a usable login reaches the engine
    if not logged_in:
        assert code == ExitCode.DATAERR and "standard input" in message


@examples(100)
@given(secrets, st.sampled_from(["OPENAI_API_KEY", "auth_mode", "tokens", "last_refresh"]))
def test_a_refused_login_never_shows_its_content(secret: str, field: str) -> None:
    raw = json.dumps({field: secret, "tokens": {"refresh_token": secret}}).encode()
    code, message = run(["login", "--shard", "0", "--from-file", "-"], raw)
    assert code == ExitCode.DATAERR and SECRET_PREFIX not in message


@examples(200)
@given(st.text(max_size=200), st.none() | st.text(max_size=20))
def test_runs_submit_checks_the_definition_first(text: str, run_id: str | None) -> None:
    argv = ["runs", "submit", "-"] + ([] if run_id is None else [f"--run-id={run_id}"])
    code, _ = run(argv, text.encode("utf-8", "surrogatepass"))
    assert code in (None, ExitCode.USAGE, ExitCode.DATAERR)


@examples(200)
@given(
    st.text(max_size=20),
    st.text(max_size=20),
    st.none() | st.text(max_size=10),
    st.lists(st.text(max_size=10), max_size=3),
)
def test_enqueue_checks_its_arguments_first(
    run_id: str, phase: str, timeout: str | None, command: list[str]
) -> None:
    argv = [f"--run-id={run_id}", f"--phase={phase}"]
    if timeout is not None:
        argv.append(f"--timeout={timeout}")
    code, _ = run(["enqueue", *argv, "--", *command])
    assert code in (None, ExitCode.USAGE, ExitCode.DATAERR)
