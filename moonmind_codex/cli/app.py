"""``moonmind-codex``: the operator's command line, a thin layer over the library.

Exit codes are those of :mod:`moonmind_codex.core.exitcodes` (``docs/internals.md`` lists them).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from moonmind_codex import __version__
from moonmind_codex.cli import fleet, logins, runs
from moonmind_codex.cli.common import Parser
from moonmind_codex.core.exitcodes import ExitCode
from moonmind_codex.settings import ENV_PREFIX, SettingsError

# The command groups, each a module with add_commands(subparsers) and COMMANDS.
GROUPS = (fleet, logins, runs)
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    name: handler for group in GROUPS for name, handler in group.COMMANDS.items()
}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="moonmind-codex", description=__doc__.split("\n")[0] if __doc__ else "")
    parser.add_argument("--version", action="version", version=f"moonmind-codex {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for group in GROUPS:
        group.add_commands(sub)
    return parser


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
