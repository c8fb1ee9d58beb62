"""Login commands: login, repair, export-login, clear-login and login-fence."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from moonmind_codex.cli import common
from moonmind_codex.cli.common import (
    Parser,
    settings_for,
    shard_arg,
)
from moonmind_codex.cli.fleet import preflight
from moonmind_codex.core.exitcodes import ExitCode
from moonmind_codex.settings import load_settings


def add_commands(sub: Any) -> None:
    """login, repair, export-login, clear-login (a shard's volume, through a container), and
    login-fence (copied logins)."""
    p = sub.add_parser(
        "login",
        help="sign a shard's volume in: ChatGPT device code (default), a file, an API key or an "
        "access token",
    )
    p.add_argument("--shard", type=shard_arg, required=True)
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
    p.add_argument("--shard", type=shard_arg, required=True)

    p = sub.add_parser(
        "export-login", help="write a shard's auth.json to standard output (moving a shard)"
    )
    p.add_argument("--shard", type=shard_arg, required=True)

    p = sub.add_parser("clear-login", help="remove a shard's auth.json (the old copy after a move)")
    p.add_argument("--shard", type=shard_arg, required=True)

    fence = sub.add_parser("login-fence", help="copied logins: which shards share one login")
    fence_sub = fence.add_subparsers(dest="fence_command", required=True, parser_class=Parser)
    p = fence_sub.add_parser("status", help="every shard's login; copies and who is fenced")
    p.add_argument("--json", action="store_true")
    p = fence_sub.add_parser(
        "resolve", help="this shard keeps its login: any other shard holding it is fenced"
    )
    p.add_argument("--shard", type=shard_arg, required=True)


def _login(args: argparse.Namespace) -> int:
    from moonmind_codex.engine import login
    from moonmind_codex.engine.client import connect

    settings = settings_for(args)
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
    return preflight(argparse.Namespace(shard=args.shard, json=False))


def _repair(args: argparse.Namespace) -> int:
    from moonmind_codex.engine import login
    from moonmind_codex.engine.client import connect

    settings = settings_for(args)
    login.repair_volume(settings, args.shard, connect(settings))
    return preflight(argparse.Namespace(shard=args.shard, json=False))


def _export_login(args: argparse.Namespace) -> int:
    from moonmind_codex.engine import login
    from moonmind_codex.engine.client import connect

    settings = settings_for(args)
    sys.stdout.buffer.write(login.export_login(settings, args.shard, connect(settings)))
    sys.stdout.buffer.flush()
    return ExitCode.OK


def _clear_login(args: argparse.Namespace) -> int:
    from moonmind_codex.engine import login
    from moonmind_codex.engine.client import connect

    settings = settings_for(args)
    login.clear_login(settings, args.shard, connect(settings))
    print(f"auth.json removed from {settings.locate_shard(args.shard)}")
    return ExitCode.OK


def _login_fence(args: argparse.Namespace) -> int:
    """``login-fence status`` and ``login-fence resolve --shard N`` (moonmind_codex.core.fence)."""
    from moonmind_codex.settings import read_fence_key

    settings = load_settings()
    store = common.run_store(settings)
    if args.fence_command == "resolve":
        shard = settings.locate_shard(args.shard)
        verdict = store.resolve_login_fence(shard.volume)
        if verdict is None:
            print(f"moonmind-codex: no login of volume {shard.volume} is registered yet")
            return ExitCode.FAILURE
        fenced = ", ".join(h.text() for h in verdict.others)
        print(
            f"shard {shard.number} (volume {shard.volume}) keeps its login"
            + (f"; fenced now: {fenced} (sign each in with its own login)" if fenced else "")
        )
        return ExitCode.OK
    key = read_fence_key(settings.fingerprint_key_file)
    verdicts = store.login_fences()
    if args.json:
        rows = [
            {
                **v.holder.to_dict(),
                "volume": v.volume,
                "status": v.status,
                "shared_with": [h.to_dict() for h in v.others],
            }
            for v in verdicts
        ]
        fencing = isinstance(key, tuple)
        print(json.dumps({"fencing": fencing, "logins": rows}, indent=2, sort_keys=True))
    else:
        if isinstance(key, str):  # why fencing is off, as the workers say it
            print(f"WARNING: {key}")
        for v in verdicts:
            shared = ", ".join(h.text() for h in v.others)
            print(
                f"shard {v.holder.shard}  {v.volume}  {v.holder.host}  {v.status}"
                + (f"  same login as {shared}" if shared else "")
            )
    return ExitCode.BLOCKED if any(v.status == "fenced" for v in verdicts) else ExitCode.OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "login": _login,
    "repair": _repair,
    "export-login": _export_login,
    "clear-login": _clear_login,
    "login-fence": _login_fence,
}
