"""Run commands: db (the run store's schema) and runs (submit, list, show, retry, cancel,
prune-workspaces)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from moonmind_codex.cli import common
from moonmind_codex.cli.common import (
    Parser,
    duration,
    shard_arg,
    whole_number,
)
from moonmind_codex.core.exitcodes import ExitCode
from moonmind_codex.core.states import RUN_STATUSES
from moonmind_codex.producer.run_file import read_definition
from moonmind_codex.settings import Settings, load_settings


def add_commands(sub: Any) -> None:
    """``db`` and ``runs``: the run store and the runs in it."""
    db = sub.add_parser("db", help="the run store's schema")
    db_sub = db.add_subparsers(dest="db_command", required=True, parser_class=Parser)
    db_sub.add_parser("upgrade", help="migrate the run store to the latest schema")

    runs = sub.add_parser("runs", help="submit, list, show, retry and cancel runs")
    runs_sub = runs.add_subparsers(dest="runs_command", required=True, parser_class=Parser)
    p = runs_sub.add_parser("submit", help="submit a run from a YAML or JSON file ('-': stdin)")
    p.add_argument("definition", metavar="FILE")
    p.add_argument("--run-id", help="the run's id (overrides the file's run_id)")
    p = runs_sub.add_parser("list", help="recent runs, newest first")
    p.add_argument("--status", choices=RUN_STATUSES)
    p.add_argument("--shard", type=shard_arg)
    p.add_argument("--limit", type=whole_number(1, "the limit"), default=50)
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
        type=duration,
        required=True,
        metavar="DURATION",
        help="keep the workspaces of runs that finished more recently, e.g. 7d, 12h",
    )
    p.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    p.add_argument("--json", action="store_true")


def _db(args: argparse.Namespace) -> int:
    from sqlalchemy import text

    del args  # one subcommand: upgrade
    store = common.run_store(load_settings())  # opening migrates to the latest revision
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
        definition = parse_run_definition(read_definition(args.definition), run_id=args.run_id)
    elif command in ("show", "retry", "cancel"):
        check_id(args.run_id, "run id")
    store = common.run_store(settings)
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


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "db": _db,
    "runs": _runs,
}
