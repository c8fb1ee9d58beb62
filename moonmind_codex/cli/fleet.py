"""Fleet commands: route, preflight, login-check, status, metrics, worker, enqueue."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from moonmind_codex.cli.common import (
    affinity_key,
    positive_int,
    settings_for,
    shard_arg,
    show,
)
from moonmind_codex.core.exitcodes import ExitCode
from moonmind_codex.settings import Settings, load_settings


def add_commands(sub: Any) -> None:
    """route, preflight, login-check, status, metrics, worker, enqueue."""
    p = sub.add_parser("route", help="print the queue an affinity key (repository, run id) uses")
    p.add_argument("key", type=affinity_key)
    p.add_argument("--shards", type=positive_int, help="fleet size (default: settings)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("preflight", help="check a shard's Codex login (exit 2 when blocked)")
    p.add_argument("--shard", type=shard_arg, required=True)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser(
        "login-check",
        help="check the logins of several shards of this host at once (exit 2 when any is blocked)",
    )
    p.add_argument("--shard", type=shard_arg, action="append", required=True, dest="shards")
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
    p.add_argument("--shard", type=shard_arg, help="default: MOONMIND_CODEX_SHARD")

    p = sub.add_parser("enqueue", help="send one Codex phase through the broker")
    p.add_argument("--run-id", required=True)
    p.add_argument("--phase", required=True)
    p.add_argument("--repository")
    p.add_argument("--timeout", type=float, help="job timeout in seconds")
    p.add_argument("--wait", action="store_true", help="wait for and print the result")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND... run in the job container")


def _route(args: argparse.Namespace) -> int:
    from moonmind_codex.producer.router import route_key

    settings = load_settings()
    if args.shards is not None:
        settings = settings.with_overrides(shard_count=args.shards, shard=None)
    decision = route_key(args.key, settings)
    if args.json:
        show(
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


def preflight(args: argparse.Namespace) -> int:
    from moonmind_codex.engine.preflight import run_preflight

    result = run_preflight(settings_for(args), args.shard)
    show(result.to_dict() if args.json else result.message(), args.json)
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
    show(value, True)
    return ExitCode.OK if value.get("outcome") == "succeeded" else ExitCode.FAILURE


def _status(args: argparse.Namespace) -> int:
    from moonmind_codex.core.fleet_status import render_table, to_json

    status = _fleet_status(load_settings())
    if args.json:
        print(json.dumps(to_json(status), indent=2, sort_keys=True))
    else:
        print(render_table(status))
    return ExitCode.OK if status.available else ExitCode.BLOCKED


def _metrics(args: argparse.Namespace) -> int:
    from moonmind_codex.cli.metrics import exposition, write_textfile
    from moonmind_codex.core.fleet_status import metric_families

    text = exposition(metric_families(_fleet_status(load_settings())))
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


def _fleet_status(settings: Settings) -> Any:
    from moonmind_codex.store.runstore import read_fleet_status

    shards = [settings.locate_shard(n) for n in range(settings.shard_count)]
    return read_fleet_status(settings.database_url, shards)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "route": _route,
    "preflight": preflight,
    "login-check": _login_check,
    "status": _status,
    "metrics": _metrics,
    "worker": _worker,
    "enqueue": _enqueue,
}
