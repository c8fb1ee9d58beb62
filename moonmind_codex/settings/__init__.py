"""The settings: every runtime knob, read from ``MOONMIND_CODEX_*`` variables.

Settings are parsed and validated once, up front, so a typo fails the worker at start with a
message naming the variable and the fix instead of surfacing as a wrong queue an hour later.
Secrets (the broker URL carries the broker password) can be given as a file path through the
``*_FILE`` twin of a variable, so they need not sit in a container's environment.

On a provisioned host the playbook renders the workers' environment once, into
``/etc/moonmind-codex/fleet.env``; :func:`load_settings` reads it underneath the process
environment, so the operator's CLI on that host names the same host, volumes and job uid as the
workers do.

Read through this package's names: ``model`` holds the values, ``sources`` where they come
from, ``load`` the parsing, ``rules`` what they must keep together.
"""

from moonmind_codex.settings.load import load_settings, parse_shard_job_images
from moonmind_codex.settings.model import (
    DEFAULT_ENV_FILE,
    DEFAULT_KEEPALIVE_COMMAND,
    ENV_PREFIX,
    NON_RUNTIME_NAMES,
    Settings,
    SettingsError,
)
from moonmind_codex.settings.sources import process_environment, read_env_file, read_fence_key

__all__ = [
    "DEFAULT_ENV_FILE",
    "DEFAULT_KEEPALIVE_COMMAND",
    "ENV_PREFIX",
    "NON_RUNTIME_NAMES",
    "Settings",
    "SettingsError",
    "load_settings",
    "parse_shard_job_images",
    "process_environment",
    "read_env_file",
    "read_fence_key",
]
