"""Start one shard's Celery worker, after its start-up guards pass."""

from __future__ import annotations

import json
import logging
import sys

from moonmind_codex.celery_app import create_app
from moonmind_codex.dockerio import DockerUnavailable, connect
from moonmind_codex.guards import WorkerStartupError, check_worker_startup
from moonmind_codex.settings import Settings

log = logging.getLogger("moonmind_codex.worker")

# EX_CONFIG: the shard's volume is missing or already served; the unit does not retry
# (RestartPreventExitStatus=78) because only an operator can fix it.
EXIT_STARTUP_REFUSED = 78
# EX_UNAVAILABLE: the engine is down; the unit retries.
EXIT_ENGINE_UNAVAILABLE = 69


def configure_logging() -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def run_worker(settings: Settings) -> int:
    configure_logging()
    shard = settings.own_shard
    queue = settings.queue_for_shard(shard)
    volume = settings.volume_for_shard(shard)
    try:
        client = connect(settings)
        startup = check_worker_startup(settings, client)
    except DockerUnavailable as exc:
        log.error("worker for shard %s cannot start yet: %s", shard, exc)
        return EXIT_ENGINE_UNAVAILABLE
    except WorkerStartupError as exc:
        log.error("worker for shard %s refused to start: %s", shard, exc)
        return EXIT_STARTUP_REFUSED
    log.info("start-up pre-flight: %s", json.dumps(startup.to_dict(), sort_keys=True))
    if startup.blocked:
        # The worker still starts: each phase runs its own pre-flight and is blocked there, so a
        # re-login fixes the shard without a restart.
        log.warning("%s", startup.message())
    log.info(
        "shard %s consuming %s with volume %s on host %s", shard, queue, volume, settings.host_name
    )
    app = create_app(settings, sticky=False)
    app.worker_main(
        [
            "worker",
            "--queues",
            queue,
            "--concurrency",
            "1",
            "--prefetch-multiplier",
            "1",
            "--hostname",
            f"codex-{shard}@{settings.host_name}",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--pool",
            "prefork",
        ]
    )
    return 0
