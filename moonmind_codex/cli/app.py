"""``moonmind-codex``: the operator's command line, a thin layer over the library.

Exit codes are those of :mod:`moonmind_codex.core.exitcodes` (``docs/internals.md`` lists them).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from moonmind_codex import __version__
from moonmind_codex.core.exitcodes import ExitCode
from moonmind_codex.settings import ENV_PREFIX, Settings, SettingsError, load_settings


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _whole_number(minimum: int, what: str) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{what} must be a whole number, got {text!r}"
            ) from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{what} must be >= {minimum}, got {value}")
        return value

    return parse


_shard_arg = _whole_number(0, "shard")
_positive_int = _whole_number(1, "the shard count")

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> float:
    """An argparse type: a duration in seconds from ``<whole number><s|m|h|d>``, e.g. 7d."""
    number, unit = text[:-1], text[-1:]
    if unit not in _DURATION_UNITS or not number.isdigit() or not number.isascii():
        raise argparse.ArgumentTypeError(
            f"a duration is a whole number and a unit (s, m, h or d), e.g. 7d; got {text!r}"
        )
    return float(int(number, 10) * _DURATION_UNITS[unit])


def _affinity_key(text: str) -> str:
    """An argparse type: a non-blank affinity key (repository, run id)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("the affinity key must not be blank, e.g. org/repo")
    return text


def _add_run_commands(sub: Any) -> None:
    """``db`` and ``runs``: the run store and the runs in it."""
    db = sub.add_parser("db", help="the run store's schema")
    db_sub = db.add_subparsers(dest="db_command", required=True, parser_class=_Parser)
    db_sub.add_parser("upgrade", help="migrate the run store to the latest schema")

    runs = sub.add_parser("runs", help="submit, list, show, retry and cancel runs")
    runs_sub = runs.add_subparsers(dest="runs_command", required=True, parser_class=_Parser)
    p = runs_sub.add_parser("submit", help="submit a run from a YAML or JSON file ('-': stdin)")
    p.add_argument("definition", metavar="FILE")
    p.add_argument("--run-id", help="the run's id (overrides the file's run_id)")
    p = runs_sub.add_parser("list", help="recent runs, newest first")
    p.add_argument("--status", choices=sorted(RUN_STATUSES))
    p.add_argument("--shard", type=_shard_arg)
    p.add_argument("--limit", type=_whole_number(1, "the limit"), default=50)
    p.add_argument("--json", action="store_true")
    p = runs_sub.add_parser("show", help="a run with its phases, attempts and logs")
    p.add_argument("run_id")
    p.add_argument("--json", action="store_true")
    p = runs_sub.add_parser("retry", help="resume a run from its first phase that did not succeed")
    p.add_argument("run_id")
    p = runs_sub.add_parser("cancel", help="cancel a run (its running job container is stopped)")
    p.add_argument("run_id")
    p = runs_sub.add_parser(
        "prune-workspaces",
        help="remove this host's workspace volumes of runs that finished longer ago than a time",
    )
    p.add_argument(
        "--older-than",
        type=_duration,
        required=True,
        metavar="DURATION",
        help="keep the workspaces of runs that finished more recently, e.g. 7d, 12h",
    )
    p.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    p.add_argument("--json", action="store_true")

    fence = sub.add_parser("login-fence", help="copied logins: which shards share one login")
    fence_sub = fence.add_subparsers(dest="fence_command", required=True, parser_class=_Parser)
    p = fence_sub.add_parser("status", help="every shard's login; copies and who is fenced")
    p.add_argument("--json", action="store_true")
    p = fence_sub.add_parser(
        "resolve", help="this shard keeps its login: any other shard holding it is fenced"
    )
    p.add_argument("--shard", type=_shard_arg, required=True)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="moonmind-codex", description=__doc__.split("\n")[0] if __doc__ else "")
    parser.add_argument("--version", action="version", version=f"moonmind-codex {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_fleet_commands(sub)
    _add_login_commands(sub)
    _add_run_commands(sub)
    return parser


def _add_fleet_commands(sub: Any) -> None:
    """route, preflight, login-check, status, metrics, worker, enqueue."""
    p = sub.add_parser("route", help="print the queue an affinity key (repository, run id) uses")
    p.add_argument("key", type=_affinity_key)
    p.add_argument("--shards", type=_positive_int, help="fleet size (default: settings)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("preflight", help="check a shard's Codex login (exit 2 when blocked)")
    p.add_argument("--shard", type=_shard_arg, required=True)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser(
        "login-check",
        help="check the logins of several shards of this host at once (exit 2 when any is blocked)",
    )
    p.add_argument("--shard", type=_shard_arg, action="append", required=True, dest="shards")
    p.add_argument("--json", action="store_true", help="one JSON array of results")

    p = sub.add_parser(
        "status",
        help="every shard's health, last keep-alive, last run and runs in flight, from the run "
        "store (exit 0 when every shard is available, 2 when any is quarantined or fenced)",
    )
    p.add_argument("--json", action="store_true")

    p = sub.add_parser(
        "metrics",
        help="the fleet's status as Prometheus metrics (text exposition format) on standard output",
    )
    p.add_argument(
        "--textfile",
        type=Path,
        metavar="PATH",
        help="write them to PATH instead, atomically and mode 0644 (node_exporter's textfile "
        "collector: a .prom file in its directory)",
    )

    p = sub.add_parser("worker", help="run the Celery worker of one shard")
    p.add_argument("--shard", type=_shard_arg, help="default: MOONMIND_CODEX_SHARD")

    p = sub.add_parser("enqueue", help="send one Codex phase through the broker")
    p.add_argument("--run-id", required=True)
    p.add_argument("--phase", required=True)
    p.add_argument("--repository")
    p.add_argument("--timeout", type=float, help="job timeout in seconds")
    p.add_argument("--wait", action="store_true", help="wait for and print the result")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND... run in the job container")


def _add_login_commands(sub: Any) -> None:
    """login, repair, export-login, clear-login: a shard's volume, through a container."""
    p = sub.add_parser(
        "login",
        help="sign a shard's volume in: ChatGPT device code (default), a file, an API key or an "
        "access token",
    )
    p.add_argument("--shard", type=_shard_arg, required=True)
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--from-file",
        type=Path,
        metavar="AUTH_JSON",
        help="copy an auth.json made elsewhere ('-' reads standard input)",
    )
    source.add_argument(
        "--api-key-stdin", action="store_true", help="read an API key from standard input"
    )
    source.add_argument(
        "--access-token-stdin",
        action="store_true",
        help="read an enterprise access token from standard input (checked online by the CLI)",
    )

    p = sub.add_parser("repair", help="restore the job uid as owner and modes 0700/0600")
    p.add_argument("--shard", type=_shard_arg, required=True)

    p = sub.add_parser(
        "export-login", help="write a shard's auth.json to standard output (moving a shard)"
    )
    p.add_argument("--shard", type=_shard_arg, required=True)

    p = sub.add_parser("clear-login", help="remove a shard's auth.json (the old copy after a move)")
    p.add_argument("--shard", type=_shard_arg, required=True)


def _print(data: dict[str, Any] | str, as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, sort_keys=True, indent=2))
    else:
        print(data)


def _settings_for(args: argparse.Namespace) -> Settings:
    settings = load_settings()
    shard = getattr(args, "shard", None)
    if shard is not None:
        settings.check_shard(shard)
    return settings


def _route(args: argparse.Namespace) -> int:
    from moonmind_codex.producer.router import route_key

    settings = load_settings()
    if args.shards is not None:
        settings = settings.with_overrides(shard_count=args.shards, shard=None)
    decision = route_key(args.key, settings)
    if args.json:
        _print(
            {
                "key": decision.key,
                "shard": decision.shard,
                "queue": decision.queue,
                "shards": settings.shard_count,
                "mode": settings.queue_mode,
            },
            True,
        )
    else:
        print(decision.queue)
    return ExitCode.OK


def _preflight(args: argparse.Namespace) -> int:
    from moonmind_codex.engine.preflight import run_preflight

    result = run_preflight(_settings_for(args), args.shard)
    _print(result.to_dict() if args.json else result.message(), args.json)
    return ExitCode.BLOCKED if result.blocked else ExitCode.OK


def _login_check(args: argparse.Namespace) -> int:
    from moonmind_codex.engine.client import DockerUnavailable
    from moonmind_codex.engine.preflight import job_image_versions, run_preflights

    settings = load_settings()
    shards = list(dict.fromkeys(args.shards))
    for shard in shards:  # every shard checked before the engine is asked about any
        settings.check_shard(shard)
    results = run_preflights(settings, shards)
    try:
        images = job_image_versions(settings, shards)
    except DockerUnavailable:  # each result already says the engine is down
        images = {
            s: {"job_image": settings.job_image_for(s), "codex_version": None} for s in shards
        }
    if args.json:
        rows = [{**r.to_dict(), **images[r.shard.number]} for r in results]
        print(json.dumps(rows, sort_keys=True, indent=2))
    else:
        for result in results:
            image = images[result.shard.number]
            print(result.message())
            print(f"  job image {image['job_image']} (Codex CLI {image['codex_version'] or '?'})")
    return ExitCode.BLOCKED if any(r.blocked for r in results) else ExitCode.OK


def _worker(args: argparse.Namespace) -> int:
    from moonmind_codex.worker.entry import run_worker

    settings = load_settings()
    if args.shard is not None:
        settings.check_shard(args.shard)
        settings = settings.with_overrides(shard=args.shard)
    settings.served_shard  # noqa: B018 - fails clearly when no shard was given anywhere
    return run_worker(settings)


def _login(args: argparse.Namespace) -> int:
    from moonmind_codex.engine import login
    from moonmind_codex.engine.client import connect

    settings = _settings_for(args)
    offered: tuple[bytes, str] | None = None
    if args.from_file is not None:
        # Read and checked before the engine is contacted: a bad file changes and starts nothing.
        # From '-' it is kept in memory: the login never touches this host's disk on its way in.
        name = "standard input" if str(args.from_file) == "-" else str(args.from_file)
        source = sys.stdin.buffer if str(args.from_file) == "-" else args.from_file
        offered = (login.read_login_source(source, name), name)
        login.check_login(settings, args.shard, *offered)
    client = connect(settings)
    if offered is not None:
        login.login_from_bytes(settings, args.shard, offered[0], client, offered[1])
    elif args.api_key_stdin or args.access_token_stdin:
        how = login.API_KEY if args.api_key_stdin else login.ACCESS_TOKEN
        login.login_from_stdin(settings, args.shard, sys.stdin.read(), client, how)
    else:
        code = login.login_device(settings, args.shard, client)
        if code != 0:
            return code
    print(f"volume {settings.volume_for_shard(args.shard)} signed in; checking it now:")
    return _preflight(argparse.Namespace(shard=args.shard, json=False))


def _repair(args: argparse.Namespace) -> int:
    from moonmind_codex.engine import login
    from moonmind_codex.engine.client import connect

    settings = _settings_for(args)
    login.repair_volume(settings, args.shard, connect(settings))
    return _preflight(argparse.Namespace(shard=args.shard, json=False))


def _export_login(args: argparse.Namespace) -> int:
    from moonmind_codex.engine import login
    from moonmind_codex.engine.client import connect

    settings = _settings_for(args)
    sys.stdout.buffer.write(login.export_login(settings, args.shard, connect(settings)))
    sys.stdout.buffer.flush()
    return ExitCode.OK


def _clear_login(args: argparse.Namespace) -> int:
    from moonmind_codex.engine import login
    from moonmind_codex.engine.client import connect

    settings = _settings_for(args)
    login.clear_login(settings, args.shard, connect(settings))
    print(f"auth.json removed from {settings.locate_shard(args.shard)}")
    return ExitCode.OK


def _enqueue(args: argparse.Namespace) -> int:
    from kombu.exceptions import OperationalError

    from moonmind_codex.core.runs import (
        check_command,
        check_id,
        check_timeout,
        parse_run_definition,
    )
    from moonmind_codex.worker.celery_app import CODEX_PHASE_TASK, create_app

    command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not command:
        print(
            "moonmind-codex enqueue: give the command after '--', e.g. -- codex login status",
            file=sys.stderr,
        )
        return ExitCode.USAGE
    settings = load_settings()
    # Checked as a run's phase would be, before the run store or the broker is touched.
    check_id(args.run_id, "--run-id")
    check_id(args.phase, "--phase")
    check_command(command)
    check_timeout(args.timeout, "--timeout: ")
    parse_run_definition(
        {
            "run_id": args.run_id,
            "repository": args.repository,
            "phases": [{"name": args.phase, "command": command}],
        }
    )
    app = create_app(settings)
    kwargs: dict[str, Any] = {"run_id": args.run_id, "phase": args.phase, "command": command}
    if args.repository:
        kwargs["repository"] = args.repository
    if args.timeout is not None:
        kwargs["timeout_s"] = args.timeout
    try:
        result = app.send_task(CODEX_PHASE_TASK, kwargs=kwargs)
        if not args.wait:
            print(result.id)
            return ExitCode.OK
        value = result.get(timeout=(args.timeout or settings.job_timeout_seconds) + 120)
    except OperationalError as exc:
        # kombu's message shows the URL with the password masked.
        print(
            f"moonmind-codex enqueue: cannot reach the broker ({exc}); check "
            "MOONMIND_CODEX_BROKER_URL(_FILE) and that the broker is running",
            file=sys.stderr,
        )
        return ExitCode.UNAVAILABLE
    except Exception as exc:  # the worker's exception, re-raised here: one line, not a traceback
        print(
            f"moonmind-codex enqueue: phase {args.phase} of run {args.run_id} failed: "
            f"{type(exc).__name__}: {exc}",
            file=sys.stderr,
        )
        return ExitCode.FAILURE
    _print(value, True)
    return ExitCode.OK if value.get("outcome") == "succeeded" else ExitCode.FAILURE


RUN_STATUSES = frozenset({"pending", "running", "succeeded", "failed", "blocked", "cancelled"})


def _run_store(settings: Settings) -> Any:
    from moonmind_codex.store.runstore import RunStore

    return RunStore.open(settings.database_url)


def _read_definition(name: str) -> Any:
    from moonmind_codex.core.runs import RunDefinitionError

    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        # ValueError: a NUL byte in the path.
        why = getattr(exc, "strerror", None) or (
            "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else "not a usable path"
        )
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


def _db(args: argparse.Namespace) -> int:
    from sqlalchemy import text

    del args  # one subcommand: upgrade
    store = _run_store(load_settings())  # opening migrates to the latest revision
    with store.engine.connect() as connection:
        revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    print(f"run store at revision {revision}")
    return ExitCode.OK


def _runs(args: argparse.Namespace) -> int:
    from moonmind_codex.core.runs import check_id, parse_run_definition
    from moonmind_codex.producer import submit

    settings = load_settings()
    command = args.runs_command
    definition = None
    # Validated before the run store is opened (opening it may migrate its schema).
    if command == "submit":
        definition = parse_run_definition(_read_definition(args.definition), run_id=args.run_id)
    elif command in ("show", "retry", "cancel"):
        check_id(args.run_id, "run id")
    store = _run_store(settings)
    if definition is not None:
        from moonmind_codex.worker.celery_app import create_app

        print(submit.submit_run(create_app(settings, store), definition, settings, store))
        return ExitCode.OK
    if command == "list":
        rows = store.list_runs(status=args.status, shard=args.shard, limit=args.limit)
        listed = [_run_summary(r) for r in rows]
        if args.json:
            print(json.dumps(listed, indent=2, sort_keys=True))
        else:
            print(f"{'run':32} {'status':10} {'queue':10} {'shard':5} {'host':16} created")
            for r in listed:
                print(
                    f"{r['run_id']:32} {r['status']:10} {r['queue'] or '-':10} "
                    f"{'-' if r['shard'] is None else r['shard']!s:5} {r['host'] or '-':16} "
                    f"{r['created_at']}"
                )
        return ExitCode.OK
    if command == "show":
        return _show_run(store, args.run_id, args.json)
    if command == "prune-workspaces":
        return _prune_workspaces(settings, store, args)
    from moonmind_codex.worker.celery_app import create_app

    app = create_app(settings, store)
    if command == "retry":
        resumed = submit.retry_run(app, args.run_id, settings, store)
        print(
            f"run {args.run_id}: every phase already succeeded; nothing sent"
            if resumed is None
            else f"run {args.run_id} resumed"
        )
        return ExitCode.OK
    revoked = submit.cancel_run(app, args.run_id, store)
    print(f"run {args.run_id} cancelled ({len(revoked)} open phase(s) revoked)")
    return ExitCode.OK


def _prune_workspaces(settings: Settings, store: Any, args: argparse.Namespace) -> int:
    from datetime import UTC, datetime, timedelta

    from moonmind_codex.engine.client import connect
    from moonmind_codex.engine.run_volumes import prune_run_volumes

    cutoff = datetime.now(UTC) - timedelta(seconds=args.older_than)
    decisions = prune_run_volumes(connect(settings), settings, store, cutoff, dry_run=args.dry_run)
    if args.json:
        print(json.dumps([d.to_dict() for d in decisions], indent=2, sort_keys=True))
        return ExitCode.OK
    wide = max([len("volume"), *(len(d.volume) for d in decisions)])
    run_wide = max([len("run"), *(len(d.run_id) for d in decisions)])
    print(f"{'volume':{wide}} {'run':{run_wide}} {'status':10} action")
    for d in decisions:
        if d.removed:
            action = "removed"
        elif d.kept_because is None:
            action = "would remove (dry run)"
        else:
            action = f"kept: {d.kept_because}"
        print(f"{d.volume:{wide}} {d.run_id:{run_wide}} {d.status or '-':10} {action}")
    return ExitCode.OK


def _when(moment: Any) -> str | None:
    return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _run_summary(record: Any) -> dict[str, Any]:
    return {
        "run_id": record.id,
        "repository": record.repository,
        "status": record.status,
        "queue": record.queue,
        "shard": record.shard,
        "volume": record.volume,
        "host": record.host,
        "preflight_status": record.preflight_status,
        "preflight_message": record.preflight_message,
        "chain_id": record.chain_id,
        "created_at": _when(record.created_at),
        "started_at": _when(record.started_at),
        "finished_at": _when(record.finished_at),
    }


def _show_run(store: Any, run_id: str, as_json: bool) -> int:
    from moonmind_codex.producer.submit import RunNotFound

    record = store.get_run(run_id)
    if record is None:
        raise RunNotFound(run_id)
    summary = _run_summary(record)
    summary["attempts"] = [
        {
            "phase": a.phase,
            "attempt": a.attempt,
            "status": a.status,
            "task_id": a.task_id,
            "container_name": a.container_name or None,
            "exit_code": a.exit_code,
            "error": a.error,
            "log_path": a.log_path or None,
        }
        for a in store.attempts(run_id)
    ]
    if as_json:
        print(json.dumps(summary, indent=2, sort_keys=True))
        return ExitCode.OK
    print(
        f"run {run_id}: {summary['status']} on {summary['queue'] or '-'} (shard "
        f"{summary['shard']}, volume {summary['volume']}, host {summary['host']})"
    )
    if summary["preflight_message"]:
        print(summary["preflight_message"])
    for a in summary["attempts"]:
        exit_text = "" if a["exit_code"] is None else f" exit {a['exit_code']}"
        print(f"  {a['phase']:16} attempt {a['attempt']} {a['status']}{exit_text}")
        if a["log_path"]:
            print(f"      log: {a['log_path']}")
        if a["error"]:
            print(f"      {a['error']}")
    return ExitCode.OK


def _login_fence(args: argparse.Namespace) -> int:
    """``login-fence status`` and ``login-fence resolve --shard N`` (moonmind_codex.core.fence)."""
    from moonmind_codex.settings import read_fence_key

    settings = load_settings()
    store = _run_store(settings)
    if args.fence_command == "resolve":
        shard = settings.locate_shard(args.shard)
        verdict = store.resolve_login_fence(shard.volume)
        if verdict is None:
            print(f"moonmind-codex: no login of volume {shard.volume} is registered yet")
            return ExitCode.FAILURE
        fenced = ", ".join(f"shard {h.shard} ({h.volume}, {h.host})" for h in verdict.others)
        print(
            f"shard {shard.number} (volume {shard.volume}) keeps its login"
            + (f"; fenced now: {fenced} (sign each in with its own login)" if fenced else "")
        )
        return ExitCode.OK
    key = read_fence_key(settings.fingerprint_key_file)
    fencing = isinstance(key, tuple)
    rows = [
        {
            "shard": v.holder.shard,
            "volume": v.volume,
            "host": v.holder.host,
            "status": v.status,
            "shared_with": [
                {"shard": h.shard, "volume": h.volume, "host": h.host} for h in v.others
            ],
        }
        for v in store.login_fences()
    ]
    if args.json:
        print(json.dumps({"fencing": fencing, "logins": rows}, indent=2, sort_keys=True))
    else:
        if isinstance(key, str):  # why fencing is off, as the workers say it
            print(f"WARNING: {key}")
        for row in rows:
            shared = ", ".join(f"shard {o['shard']} ({o['host']})" for o in row["shared_with"])
            print(
                f"shard {row['shard']}  {row['volume']}  {row['host']}  {row['status']}"
                + (f"  same login as {shared}" if shared else "")
            )
    return ExitCode.BLOCKED if any(r["status"] == "fenced" for r in rows) else ExitCode.OK


def _read_fleet_status(settings: Settings) -> Any:
    """The fleet's status from the run store, opened read-only (nothing created or migrated)."""
    from moonmind_codex.core.fleet_status import fleet_status
    from moonmind_codex.store.engine import STORE_ERRORS, unavailable
    from moonmind_codex.store.runstore import RunStore

    shards = [settings.locate_shard(n) for n in range(settings.shard_count)]
    numbers = [s.number for s in shards]
    store = RunStore.open_existing(settings.database_url)
    try:
        return fleet_status(
            shards,
            healths=store.shard_healths(),
            fences=store.login_fences(),
            latest_runs=store.latest_runs_by_shard(numbers),
            latest_keepalives=store.latest_keepalives(numbers),
            open_runs=store.open_runs(),
            counts=store.run_counts(),
        )
    except STORE_ERRORS as exc:  # the database went away, or a table is missing
        raise unavailable(settings.database_url, exc) from None
    finally:
        store.engine.dispose()


def _status(args: argparse.Namespace) -> int:
    from moonmind_codex.core.fleet_status import render_table, to_json

    status = _read_fleet_status(load_settings())
    if args.json:
        print(json.dumps(to_json(status), indent=2, sort_keys=True))
    else:
        print(render_table(status))
    return ExitCode.OK if status.available else ExitCode.BLOCKED


def _metrics(args: argparse.Namespace) -> int:
    from moonmind_codex.cli.metrics import exposition, write_textfile
    from moonmind_codex.core.fleet_status import metric_families

    text = exposition(metric_families(_read_fleet_status(load_settings())))
    if args.textfile is None:
        sys.stdout.write(text)
        return ExitCode.OK
    try:
        write_textfile(args.textfile, text)
    except OSError as exc:
        print(
            f"moonmind-codex: cannot write {args.textfile} ({exc.strerror or exc}); give a path "
            "in a writable directory (node_exporter's --collector.textfile.directory)",
            file=sys.stderr,
        )
        return ExitCode.FAILURE
    return ExitCode.OK


COMMANDS = {
    "status": _status,
    "metrics": _metrics,
    "login-fence": _login_fence,
    "route": _route,
    "preflight": _preflight,
    "login-check": _login_check,
    "worker": _worker,
    "login": _login,
    "repair": _repair,
    "export-login": _export_login,
    "clear-login": _clear_login,
    "enqueue": _enqueue,
    "runs": _runs,
    "db": _db,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from moonmind_codex.core.runs import RunDefinitionError
    from moonmind_codex.engine.client import DockerUnavailable
    from moonmind_codex.engine.login import LoginDataError, LoginError
    from moonmind_codex.producer.router import RoutingError
    from moonmind_codex.producer.submit import RunNotFound
    from moonmind_codex.store.engine import StoreUnavailable

    # The expected endings: one line on stderr and a status from exitcodes, never a traceback.
    # First match wins (a LoginDataError is also a LoginError).
    endings: tuple[tuple[type[Exception] | tuple[type[Exception], ...], str, ExitCode], ...] = (
        (SettingsError, "bad setting: ", ExitCode.CONFIG),
        (DockerUnavailable, "", ExitCode.UNAVAILABLE),
        (LoginDataError, "", ExitCode.DATAERR),
        ((LoginError, RoutingError), "", ExitCode.FAILURE),
        (RunDefinitionError, "bad run: ", ExitCode.DATAERR),
    )
    try:
        return COMMANDS[args.command](args)
    except StoreUnavailable as exc:
        print(
            f"moonmind-codex: {exc}; check {ENV_PREFIX}DATABASE_URL (or its _FILE twin)",
            file=sys.stderr,
        )
        return ExitCode.UNAVAILABLE
    except RunNotFound as exc:
        print(
            f"moonmind-codex: no run {exc.args[0]} in the run store "
            "(see `moonmind-codex runs list`)",
            file=sys.stderr,
        )
        return ExitCode.DATAERR
    except (SettingsError, DockerUnavailable, LoginError, RoutingError, RunDefinitionError) as exc:
        prefix, code = next((p, c) for kinds, p, c in endings if isinstance(exc, kinds))
        print(f"moonmind-codex: {prefix}{exc}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
