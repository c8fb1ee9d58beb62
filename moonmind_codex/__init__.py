"""moonmind-codex: Celery Codex worker shards with persistent Codex CLI sign-ins.

The producer's side is importable without Docker or Celery's worker machinery: settings, the
shard value, routing (:func:`install_routing`, :class:`CodexRouter`) and exit codes. The
worker's side (the Celery app, the pre-flight, job containers) is loaded on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from moonmind_codex.core.exitcodes import ExitCode
    from moonmind_codex.core.shard import Shard
    from moonmind_codex.engine.preflight import PreflightResult, run_preflight
    from moonmind_codex.producer.router import (
        CodexRouter,
        RouteDecision,
        RoutingError,
        install_routing,
        route_key,
    )
    from moonmind_codex.settings import Settings, SettingsError, load_settings
    from moonmind_codex.worker.celery_app import CODEX_PHASE_TASK, create_app

    __version__: str

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

# Every name is loaded on first use: the worker's side pulls in the Docker SDK, and the job
# image's in-container pre-flight imports single modules of this package at every job start,
# where each imported millisecond is a millisecond before the Codex command runs.
_LAZY = {
    "CODEX_PHASE_TASK": "moonmind_codex.worker.celery_app",
    "create_app": "moonmind_codex.worker.celery_app",
    "PreflightResult": "moonmind_codex.engine.preflight",
    "run_preflight": "moonmind_codex.engine.preflight",
    "ExitCode": "moonmind_codex.core.exitcodes",
    "CodexRouter": "moonmind_codex.producer.router",
    "RouteDecision": "moonmind_codex.producer.router",
    "RoutingError": "moonmind_codex.producer.router",
    "install_routing": "moonmind_codex.producer.router",
    "route_key": "moonmind_codex.producer.router",
    "Settings": "moonmind_codex.settings",
    "SettingsError": "moonmind_codex.settings",
    "Shard": "moonmind_codex.core.shard",
    "load_settings": "moonmind_codex.settings",
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("moonmind-codex")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        return _version()
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'moonmind_codex' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
