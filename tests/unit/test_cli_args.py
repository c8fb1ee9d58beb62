"""Pure CLI, log-format and routing-adoption checks: no Docker, no broker."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from moonmind_codex.cli.app import main
from moonmind_codex.core.exitcodes import ExitCode
from moonmind_codex.producer.router import route_key
from moonmind_codex.settings import Settings


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_route_prints_the_queue(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "route", "org/repo", "--shards", "8")
    assert code == 0 and out.strip() == route_key("org/repo", Settings(shard_count=8)).queue


def test_route_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "route", "org/repo", "--json")
    data = json.loads(out)
    assert code == 0 and data["shards"] == 3 and data["queue"] == f"codex-{data['shard']}"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["route", "k", "--shards", "0"], "the shard count must be >= 1, got 0"),
        (["route", "k", "--shards", "x"], "the shard count must be a whole number, got 'x'"),
        (["preflight", "--shard", "-1"], "shard must be >= 0"),
        (["preflight", "--shard", "one"], "shard must be a whole number"),
        (["preflight"], "the following arguments are required: --shard"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["login", "--shard", "0", "--from-file", "a", "--api-key-stdin"], "not allowed with"),
    ],
)
def test_bad_arguments(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    code, _, err = run(capsys, *argv)
    assert code == ExitCode.USAGE == 64
    assert message in err and "--help" in err


def test_shard_out_of_range_is_refused_before_docker(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOONMIND_CODEX_DOCKER_URL", "unix:///nonexistent/docker.sock")
    code, _, err = run(capsys, "preflight", "--shard", "3")
    assert code == ExitCode.CONFIG == 78
    assert "shard 3 is out of range: this fleet has 3 shards (0..2)" in err


def test_malformed_settings(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOONMIND_CODEX_SHARD_COUNT", "many")
    code, _, err = run(capsys, "route", "k")
    assert code == 78 and "MOONMIND_CODEX_SHARD_COUNT='many' is not a whole number" in err


def test_worker_without_shard(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "worker")
    assert code == 78 and "MOONMIND_CODEX_SHARD is not set" in err


def test_enqueue_without_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "enqueue", "--run-id", "r", "--phase", "p")
    assert code == 64 and "give the command after '--'" in err


def test_docker_down_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOONMIND_CODEX_DOCKER_URL", "unix:///nonexistent/docker.sock")
    code, _, err = run(capsys, "repair", "--shard", "0")
    assert code == 69 and "cannot reach the Docker engine" in err


def test_worker_log_lines_are_json_and_redact_urls() -> None:
    import logging

    from moonmind_codex.worker.entry import JsonFormatter

    record = logging.LogRecord(
        "celery",
        logging.ERROR,
        __file__,
        1,
        "cannot reach %s",
        ("amqp://mm:hunter2@b:5672//",),
        None,
    )
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert entry["msg"] == "cannot reach amqp://mm:***@b:5672//" and "hunter2" not in line
    assert (entry["level"], entry["logger"]) == ("ERROR", "celery")


def test_audit_records_are_embedded_as_objects() -> None:
    import logging

    from moonmind_codex.worker.entry import JsonFormatter

    record = logging.LogRecord(
        "moonmind_codex.audit",
        logging.INFO,
        __file__,
        1,
        '{"event": "x", "shard": 1}',
        (),
        None,
    )
    assert json.loads(JsonFormatter().format(record))["audit"] == {"event": "x", "shard": 1}


def test_install_routing_keeps_an_apps_own_routes() -> None:
    from celery import Celery

    from moonmind_codex.worker.celery_app import install_routing

    app = Celery("existing", broker="memory://", set_as_current=False)
    app.conf.task_routes = {"reports.*": {"queue": "reports"}}

    @app.task(name="pipelines.codex_specify")  # type: ignore[untyped-decorator]
    def codex_specify(run_id: str, repository: str) -> None: ...

    @app.task(name="reports.daily")  # type: ignore[untyped-decorator]
    def daily() -> None: ...

    @app.task(name="misc.other")  # type: ignore[untyped-decorator]
    def other() -> None: ...

    settings = Settings(shard_count=4)
    install_routing(app, settings)
    router = app.amqp.router

    def queue_of(name: str, kwargs: dict[str, str]) -> str:
        return str(router.route({}, name, (), kwargs, app.tasks[name])["queue"].name)

    expected = route_key("org/repo", settings).queue
    assert queue_of("pipelines.codex_specify", {"run_id": "r1", "repository": "org/repo"}) == (
        expected
    )
    assert queue_of("reports.daily", {}) == "reports"
    assert queue_of("misc.other", {}) == "celery"


def test_db_upgrade_migrates_and_names_the_revision(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    database = tmp_path / "state" / "runs.sqlite3"
    monkeypatch.setenv("MOONMIND_CODEX_DATABASE_URL", f"sqlite:///{database}")
    code, out, _ = run(capsys, "db", "upgrade")
    assert code == 0 and out.strip() == "run store at revision 0003"
    assert database.is_file()
    code, out, _ = run(capsys, "db", "upgrade")  # again: nothing to do
    assert code == 0 and "0003" in out


def test_database_url_that_is_not_supported_is_a_settings_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOONMIND_CODEX_DATABASE_URL", "mysql://u:secret@h/db")
    code, _, err = run(capsys, "db", "upgrade")
    assert code == 78 and "DATABASE_URL must be sqlite:///PATH" in err
    assert "secret" not in err


# The console script and `python -m`, each in a fresh interpreter (moved from the integration
# tests: they never touched the engine).
INSTALLED_CLI = shutil.which("moonmind-codex") or str(
    Path(sys.executable).parent / "moonmind-codex"
)


def installed(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [INSTALLED_CLI, *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=dict(os.environ, **env),
    )


def test_installed_route_command_answers_alike_in_every_process() -> None:
    # Pinned: a key's queue (so the login it runs with) must not move between processes or
    # releases. 8 shards give codex-4; the default 3 would give codex-1.
    for seed in ("1", "2", "3"):
        done = installed("route", "org/app", "--shards", "8", PYTHONHASHSEED=seed)
        assert (done.returncode, done.stdout) == (0, "codex-4\n"), done.stderr
    by_env = installed("route", "org/app", MOONMIND_CODEX_SHARD_COUNT="8")
    assert (by_env.returncode, by_env.stdout) == (0, "codex-4\n"), by_env.stderr
    as_json = installed("route", "org/app", "--shards", "8", "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == {
        "key": "org/app",
        "shard": 4,
        "queue": "codex-4",
        "shards": 8,
        "mode": "sharded",
    }


def test_python_dash_m_prints_the_installed_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "moonmind_codex", "--version"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"moonmind-codex {importlib.metadata.version('moonmind-codex')}\n"
