"""Start one shard's Celery worker, after its start-up guards pass."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

from celery import Celery
from celery.signals import worker_ready, worker_shutting_down

from moonmind_codex.core.exitcodes import ExitCode
from moonmind_codex.engine.client import DockerUnavailable, connect
from moonmind_codex.settings import Settings
from moonmind_codex.worker.celery_app import create_app
from moonmind_codex.worker.guards import WorkerStartupError, check_worker_startup
from moonmind_codex.worker.keepalive_scheduler import for_worker

log = logging.getLogger("moonmind_codex.worker.entry")


# user:password@ in any URL (the broker URL carries the broker password).
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@\s]*@", re.I)
AUDIT_LOGGER = "moonmind_codex.audit"


def redact(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` URL replaced."""
    return _URL_CREDENTIALS.sub(r"\g<scheme>\g<user>:***@", text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, so journald and log shippers can parse worker output.

    Audit records are already JSON: they are embedded as an object, not as an escaped string.
    """

    def format(self, record: logging.LogRecord) -> str:
        message = redact(record.getMessage())
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname,
            "logger": record.name,
        }
        if record.name == AUDIT_LOGGER and message.startswith("{"):
            try:
                entry["audit"] = json.loads(message)
            except ValueError:
                entry["msg"] = message
        else:
            entry["msg"] = message
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, sort_keys=False, default=str)


def configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # Library warnings would otherwise be bare lines on stderr between the JSON ones.
    logging.captureWarnings(True)


def run_worker(settings: Settings) -> int:
    configure_logging()
    shard = settings.served_shard
    refused = _startup_refusal(settings)
    if refused is not None:
        return refused
    log.info(
        "shard %s consuming %s with volume %s on host %s",
        shard.number,
        shard.queue,
        shard.volume,
        shard.host,
    )
    app = create_app(settings, sticky=False)
    stopped_by = _wire_keepalive_and_signals(settings, app)
    try:
        app.worker_main(_worker_argv(settings))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else ExitCode.FAILURE
        if code != 0:
            log.error("shard %s stopped consuming (exit %s)", shard.number, code)
            return ExitCode.UNAVAILABLE
    if any(sig in ("SIGTERM", "SIGINT", "SIGQUIT") for sig in stopped_by):
        return ExitCode.OK  # an operator's stop (systemctl stop, docker stop)
    # Anything else (a remote shutdown, a broker given up on) must not look like success:
    # the unit restarts a worker that exits non-zero.
    log.error(
        "shard %s stopped consuming without an operator's stop (%s); exiting %d so that it is "
        "restarted",
        shard.number,
        ", ".join(stopped_by) or "no signal",
        ExitCode.UNAVAILABLE,
    )
    return ExitCode.UNAVAILABLE


def _startup_refusal(settings: Settings) -> int | None:
    """The exit code when the worker must not start (None: start), after its start-up checks."""
    shard = settings.served_shard
    try:
        client = connect(settings)
        startup = check_worker_startup(settings, client)
    except DockerUnavailable as exc:
        # The unit restarts the worker: the engine may come back.
        log.error("worker for shard %s cannot start yet: %s", shard.number, exc)
        return ExitCode.UNAVAILABLE
    except WorkerStartupError as exc:
        # Only an operator can fix a missing or doubly served volume: the unit stops here.
        log.error("worker for shard %s refused to start: %s", shard.number, exc)
        return ExitCode.CONFIG
    log.info("start-up pre-flight: %s", json.dumps(startup.to_dict(), sort_keys=True))
    if startup.blocked:
        # The worker still starts: each phase runs its own pre-flight and is blocked there, so a
        # re-login fixes the shard without a restart.
        log.warning("%s", startup.message())
    return None


def _wire_keepalive_and_signals(settings: Settings, app: Celery) -> list[str]:
    """Start this shard's keep-alives when the worker is ready and stop them at shutdown; the
    list returned fills with the signals that stopped the worker."""
    stopped_by: list[str] = []
    # This shard's keep-alives (moonmind_codex.core.keepalive): a thread of this main process,
    # started once the pool and the consumer run, sending through this shard's own queue.
    keepalive = for_worker(settings, app)

    @worker_ready.connect(weak=False)  # type: ignore[untyped-decorator]
    def _start_keepalive(**_: object) -> None:
        if keepalive is not None:
            keepalive.start()

    @worker_shutting_down.connect(weak=False)  # type: ignore[untyped-decorator]
    def _note_signal(sig: str = "", **_: object) -> None:
        stopped_by.append(sig)
        if keepalive is not None:
            keepalive.stop(timeout_s=0)

    return stopped_by


def _worker_argv(settings: Settings) -> list[str]:
    shard = settings.served_shard
    return [
        "worker",
        "--queues",
        shard.queue,
        "--concurrency",
        "1",
        "--prefetch-multiplier",
        "1",
        "--hostname",
        f"{settings.queue_prefix}-{shard.number}@{shard.host}",
        "--loglevel",
        "INFO",
        # No gossip, mingle or heartbeat events: nothing on the broker but this shard's queue
        # and replies (the shard's broker user may use nothing else).
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--pool",
        "prefork",
    ]
