"""The command policy: only allowlisted commands run with a shard's login."""

from __future__ import annotations

import re

import pytest

from moonmind_codex.core.policy import DEFAULT_ALLOWED_COMMANDS, command_allowed, refusal
from moonmind_codex.settings import SettingsError, load_settings


@pytest.mark.parametrize(
    ("command", "allowed"),
    [
        (["codex", "exec", "plan"], True),
        (["specify", "init", "--here"], True),
        (["git", "status"], True),
        (["sh", "-c", "cat /home/app/.codex/auth.json"], False),
        (["/usr/local/bin/codex", "exec"], False),  # a path must be listed as that path
        (["./codex"], False),  # a file the job wrote in its workspace
        (["codex-evil"], False),
        (["CODEX"], False),
        ([], False),
    ],
)
def test_the_default_allows_the_codex_and_spec_kit_clis_and_git(
    command: list[str], allowed: bool
) -> None:
    assert command_allowed(command, DEFAULT_ALLOWED_COMMANDS) is allowed


def test_paths_match_exactly_and_star_allows_anything() -> None:
    assert command_allowed(["/opt/tools/run", "x"], ("codex", "/opt/tools/run"))
    assert not command_allowed(["/opt/tools/run2"], ("/opt/tools/run",))
    assert command_allowed(["sh", "-c", "anything"], ("*",))


REFUSAL = (
    "command {command} is not allowed on this worker: MOONMIND_CODEX_ALLOWED_COMMANDS allows "
    "{allowed}; add it there on every worker of the fleet if it is meant to run with a shard's "
    "login; nothing was started"
)


def test_a_refusal_names_the_command_the_allowlist_and_the_setting() -> None:
    text = refusal(["sh", "-c", "x"], ("codex", "git"), "MOONMIND_CODEX_ALLOWED_COMMANDS")
    assert text == REFUSAL.format(command="'sh'", allowed="codex, git")


def test_a_refusal_of_an_empty_command_or_allowlist_still_reads_as_a_sentence() -> None:
    text = refusal([], (), "MOONMIND_CODEX_ALLOWED_COMMANDS")
    assert text == REFUSAL.format(command="''", allowed="nothing")


def test_a_refusal_quotes_at_most_200_characters_of_the_command() -> None:
    # A message can carry any command: the log line and the task result stay bounded.
    long = "x" * 200
    text = refusal([long + "TAIL"], ("codex",), "MOONMIND_CODEX_ALLOWED_COMMANDS")
    assert text == REFUSAL.format(command=repr(long), allowed="codex")


def test_the_setting_is_read_and_checked() -> None:
    assert load_settings({}).allowed_commands == ("codex", "specify", "git")
    custom = load_settings({"MOONMIND_CODEX_ALLOWED_COMMANDS": " codex, /opt/run ,sh"})
    assert custom.allowed_commands == ("codex", "/opt/run", "sh")
    assert load_settings({"MOONMIND_CODEX_ALLOWED_COMMANDS": "*"}).allowed_commands == ("*",)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (",", "MOONMIND_CODEX_ALLOWED_COMMANDS is empty"),
        (" , ", "MOONMIND_CODEX_ALLOWED_COMMANDS is empty"),
        ("codex git", "entry 'codex git' is not a command name"),
        ("bin/codex", "entry 'bin/codex' is not a command name"),
        ("cod*", "entry 'cod*' is not a command name"),
    ],
)
def test_a_bad_allowlist_is_refused_at_start(value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        load_settings({"MOONMIND_CODEX_ALLOWED_COMMANDS": value})
