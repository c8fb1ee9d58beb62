"""A small host application, as an operator's would be: its own Celery app and worker.

It routes through moonmind-codex, records the run phases its worker runs, and publishes with
the publish hook. Started by test_runs_e2e as ``celery -A tests.integration.hostapp worker``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from celery import Celery

from moonmind_codex import install_routing, load_settings
from moonmind_codex.producer.hooks import RunContext, publish_hook
from moonmind_codex.producer.recording import install_run_recording
from moonmind_codex.store.runstore import RunStore

settings = load_settings()
app = Celery("hostapp", broker=settings.broker_url, backend="rpc://")
_opened: dict[str, RunStore] = {}


def store() -> RunStore:
    if "store" not in _opened:
        _opened["store"] = RunStore.open(settings.database_url)
    return _opened["store"]


install_routing(app, settings)
install_run_recording(app, store)


@app.task(name="hostapp.publish")  # type: ignore[untyped-decorator]
@publish_hook(store, workspace_volume_prefix=os.environ["HOSTAPP_WORKSPACE"])
def publish(context: RunContext, title: str) -> dict[str, Any]:
    seen = {
        "title": title,
        "run_id": context.run_id,
        "repository": context.repository,
        "shard": context.shard,
        "host": context.host,
        "workspace_volume": context.workspace_volume,
        "workspace_path": context.workspace_path,
        "phases": [(a.phase, a.status) for a in context.phases],
        "logs": context.logs,
    }
    Path(os.environ["HOSTAPP_OUT"]).write_text(json.dumps(seen))
    return seen
