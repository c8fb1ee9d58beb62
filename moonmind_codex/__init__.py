"""moonmind-codex: Celery Codex worker shards with persistent Codex CLI sign-ins.

The producer's side is importable without Docker or Celery's worker machinery: settings, the
shard value, routing (:func:`install_routing`, :class:`CodexRouter`) and exit codes. The
worker's side (the Celery app, the pre-flight, job containers) is loaded on first use.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from moonmind_codex.exitcodes import ExitCode
from moonmind_codex.router import (
    CodexRouter,
    RouteDecision,
    RoutingError,
    install_routing,
    route_key,
)
from moonmind_codex.settings import Settings, SettingsError, Shard, load_settings

if TYPE_CHECKING:
    from moonmind_codex.celery_app import CODEX_PHASE_TASK, create_app
    from moonmind_codex.preflight import PreflightResult, run_preflight

try:
    __version__ = version("moonmind-codex")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "CODEX_PHASE_TASK",
    "CodexRouter",
    "ExitCode",
    "PreflightResult",
    "RouteDecision",
    "RoutingError",
    "Settings",
    "SettingsError",
    "Shard",
    "__version__",
    "create_app",
    "install_routing",
    "load_settings",
    "route_key",
    "run_preflight",
]

# Worker-side names: importing them pulls in the Docker SDK, so only on first use.
_LAZY = {
    "CODEX_PHASE_TASK": "moonmind_codex.celery_app",
    "create_app": "moonmind_codex.celery_app",
    "PreflightResult": "moonmind_codex.preflight",
    "run_preflight": "moonmind_codex.preflight",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'moonmind_codex' has no attribute {name!r}")
