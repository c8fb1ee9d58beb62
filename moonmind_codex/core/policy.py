"""Which commands a worker runs in a job container with a shard's login (pure).

A message on a Codex queue carries the command to run; the broker's password alone must not be
enough to run anything at all with a login mounted. A worker runs a command only when its first
word is on the fleet's allowlist (``MOONMIND_CODEX_ALLOWED_COMMANDS``): a bare name (``codex``)
matches exactly that name, looked up on the job image's PATH (root-owned directories only); a
path (``/opt/tools/run``) matches exactly that path. ``*`` allows anything (development only).
"""

from __future__ import annotations

from collections.abc import Sequence

ANY_COMMAND = "*"
# The Codex and Spec Kit CLIs, and git for checkouts: what a spec workflow runs.
DEFAULT_ALLOWED_COMMANDS = ("codex", "specify", "git")


def command_allowed(command: Sequence[str], allowed: Sequence[str]) -> bool:
    if ANY_COMMAND in allowed:
        return True
    return bool(command) and command[0] in allowed


def refusal(command: Sequence[str], allowed: Sequence[str], setting: str) -> str:
    """Why ``command`` is not run, and the setting that would allow it."""
    first = command[0] if command else ""
    return (
        f"command {first[:200]!r} is not allowed on this worker: {setting} allows "
        f"{', '.join(allowed) or 'nothing'}; add it there on every worker of the fleet if it is "
        "meant to run with a shard's login; nothing was started"
    )
