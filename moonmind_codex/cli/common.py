"""What every command group of the CLI shares: the parser class, argument types, output, and
opening the settings and the run store."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any, NoReturn

from moonmind_codex.core.exitcodes import ExitCode
from moonmind_codex.settings import Settings, load_settings


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def whole_number(minimum: int, what: str) -> Callable[[str], int]:
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


shard_arg = whole_number(0, "shard")


positive_int = whole_number(1, "the shard count")


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> float:
    """An argparse type: a duration in seconds from ``<whole number><s|m|h|d>``, e.g. 7d."""
    number, unit = text[:-1], text[-1:]
    if unit not in DURATION_UNITS or not number.isdigit() or not number.isascii():
        raise argparse.ArgumentTypeError(
            f"a duration is a whole number and a unit (s, m, h or d), e.g. 7d; got {text!r}"
        )
    return float(int(number, 10) * DURATION_UNITS[unit])


def affinity_key(text: str) -> str:
    """An argparse type: a non-blank affinity key (repository, run id)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("the affinity key must not be blank, e.g. org/repo")
    return text


def show(data: dict[str, Any] | str, as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, sort_keys=True, indent=2))
    else:
        print(data)


def settings_for(args: argparse.Namespace) -> Settings:
    settings = load_settings()
    shard = getattr(args, "shard", None)
    if shard is not None:
        settings.check_shard(shard)
    return settings


def run_store(settings: Settings) -> Any:
    """The run store, migrated to the latest schema (the commands that write to it)."""
    from moonmind_codex.store.runstore import RunStore

    return RunStore.open(settings.database_url)
