"""Runs through the real broker and three real worker shards, with records on.

Side by side in one run:
(a) throughput of no-op Codex runs (one phase, `true`) across 3 shards: runs per minute and
    submit -> run succeeded (from the run store) p50/p95;
(b) latency of an ordinary default-queue task (`moonmind_codex.ping`, one at a time) with every
    Codex queue idle against every Codex queue saturated (each shard running a job with a
    backlog of phases behind it). Idle and saturated blocks alternate, round after round, so a
    machine whose other load drifts during the run weighs on both sides alike; each side pools
    every sample (none dropped). Per block, CPU accounting says where time went: the machine's
    busy cores, the shard workers' and the broker's own CPU, and how long the processes on the
    ping's path (producer, broker, its port proxy, default worker) waited for a CPU
    (run-queue delay from /proc/PID/task/*/schedstat).
Target: (b) saturated / idle p50 <= 1.05: Codex work never slows the default queue.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.stats import (
    distribution,
    finish,
    format_distribution,
    machine,
    percentile,
    target_row,
)
from harness.broker import broker_container, running_broker
from harness.fleet import (
    WORKER_UID,
    producer_database_url,
    start_default_worker,
    start_worker,
    wait_for_log,
)
from harness.logins import api_key_login
from moonmind_codex.producer.router import route_key
from moonmind_codex.producer.submit import submit_run
from moonmind_codex.settings import Settings
from moonmind_codex.store.runstore import RunStore
from moonmind_codex.worker.celery_app import PING_TASK, create_app

SHARDS = 3
# (b) default-queue ping p50 with every Codex queue saturated / with them idle, at most.
TARGET_RATIO = 1.05


def repositories(settings: Settings, per_shard: int) -> list[str]:
    """Keys spread evenly over the shards."""
    found: dict[int, list[str]] = {n: [] for n in range(SHARDS)}
    i = 0
    while any(len(v) < per_shard for v in found.values()):
        key = f"bench/runs-{i}"
        shard = int(route_key(key, settings).queue.rsplit("-", 1)[1])
        if len(found[shard]) < per_shard:
            found[shard].append(key)
        i += 1
    return [k for keys in found.values() for k in keys]


def wait_all(store: RunStore, run_ids: list[str], timeout_s: float) -> dict[str, float]:
    """When each run succeeded (time.time()), polling the run store."""
    done: dict[str, float] = {}
    deadline = time.monotonic() + timeout_s
    while len(done) < len(run_ids):
        assert time.monotonic() < deadline, f"{len(done)}/{len(run_ids)} runs finished"
        for run_id in run_ids:
            if run_id not in done:
                record = store.get_run(run_id)
                if record is not None and record.status in ("succeeded", "failed", "blocked"):
                    assert record.status == "succeeded", (run_id, record.status)
                    done[run_id] = time.time()
        time.sleep(0.05)
    return done


def cpu_busy_seconds() -> float:
    """CPU time (all cores) the machine spent not idle, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def container_cpu_seconds(container_id: str) -> float | None:
    """A container's CPU time from its cgroup (v1 cpuacct or v2 cpu.stat); None if not found."""
    v1 = Path(f"/sys/fs/cgroup/cpuacct/docker/{container_id}/cpuacct.usage")
    v2 = Path(f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/cpu.stat")
    try:
        if v1.exists():
            return int(v1.read_text()) / 1e9
        if v2.exists():
            for line in v2.read_text().splitlines():
                if line.startswith("usage_usec "):
                    return int(line.split()[1]) / 1e6
    except (OSError, ValueError):
        pass
    return None


def runqueue_wait_seconds(pids: list[int]) -> float:
    """Time the threads of ``pids`` spent runnable but waiting for a CPU (schedstat field 2)."""
    total = 0
    for pid in pids:
        for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            with contextlib.suppress(OSError, ValueError, IndexError):  # a thread just ended
                total += int(stat.read_text().split()[1])
    return total / 1e9


def _pids(matches: Callable[[Path], bool]) -> list[int]:
    """Host processes whose /proc entry ``matches`` (one that ends meanwhile is skipped)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, UnicodeDecodeError):
                if matches(entry):
                    found.append(int(entry.name))
    return found


def pids_in_container(container_id: str) -> list[int]:
    return _pids(lambda entry: container_id in (entry / "cgroup").read_text())


def pids_of(needle: str) -> list[int]:
    """Host processes whose command line contains ``needle`` (the broker's port proxy)."""
    return _pids(
        lambda entry: needle in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    )


class Meter:
    """CPU accounting over one block of pings."""

    def __init__(self, path: dict[str, list[int]], containers: dict[str, str]) -> None:
        self.path = path  # name -> pids on the ping's path
        self.containers = containers  # name -> container id

    def read(self) -> dict[str, Any]:
        return {
            "t": time.monotonic(),
            "busy": cpu_busy_seconds(),
            "wait": {name: runqueue_wait_seconds(pids) for name, pids in self.path.items()},
            "cpu": {name: container_cpu_seconds(cid) for name, cid in self.containers.items()},
        }

    @staticmethod
    def delta(a: dict[str, Any], b: dict[str, Any], pings: int) -> dict[str, Any]:
        seconds = b["t"] - a["t"]
        cpu = {
            name: None if a["cpu"][name] is None else (b["cpu"][name] - a["cpu"][name]) / seconds
            for name in a["cpu"]
        }
        return {
            "seconds": seconds,
            "busy_cores": (b["busy"] - a["busy"]) / seconds,
            # Milliseconds each process on the path waited for a CPU, per ping.
            "runqueue_wait_ms_per_ping": {
                name: (b["wait"][name] - a["wait"][name]) / pings * 1000 for name in a["wait"]
            },
            "container_cores": cpu,
        }


def summarise_blocks(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over blocks of the per-block CPU accounting."""
    names = blocks[0]["runqueue_wait_ms_per_ping"]
    containers = blocks[0]["container_cores"]
    return {
        "busy_cores": statistics.fmean(b["busy_cores"] for b in blocks),
        "runqueue_wait_ms_per_ping": {
            n: statistics.fmean(b["runqueue_wait_ms_per_ping"][n] for b in blocks) for n in names
        },
        "container_cores": {
            n: None
            if any(b["container_cores"][n] is None for b in blocks)
            else statistics.fmean(b["container_cores"][n] for b in blocks)
            for n in containers
        },
    }


def job_cpu_shares_seen(client: Any, volumes: list[str]) -> list[int]:
    """CpuShares of this fleet's running job containers (0: the engine's default, 1024)."""
    return sorted(
        {
            c.attrs["HostConfig"].get("CpuShares") or 0
            for volume in volumes
            for c in client.containers.list(
                filters={
                    "label": ["io.moonmind.codex.role=job", f"io.moonmind.codex.volume={volume}"]
                }
            )
        }
    )


def parse_cpus(text: str) -> set[int]:
    """``"0"``, ``"0,2"`` or ``"0-3"`` (the cpuset syntax) as a set of core numbers."""
    cores: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        cores.update(range(int(first), int(last or first) + 1))
    return cores


def _set_threads(pid: int, cores: set[int]) -> None:
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError, ValueError):  # a thread just ended
            os.sched_setaffinity(int(task.name), cores)


def pin_threads(pids: list[int], cores: set[int]) -> dict[int, set[int]]:
    """Every thread of ``pids`` on ``cores``; each process's cores before, to restore them.

    Processes these threads start later inherit the mask: the engine's container shims and
    runc (the container churn of Codex phases) follow dockerd and containerd.
    """
    before: dict[int, set[int]] = {}
    for pid in pids:
        with contextlib.suppress(OSError):  # the process just ended
            before[pid] = os.sched_getaffinity(pid)
            _set_threads(pid, cores)
    return before


def restore_threads(before: dict[int, set[int]]) -> None:
    """Every thread of each process back on its cores, those it started meanwhile included."""
    for pid, cores in before.items():
        _set_threads(pid, cores)


def engine_pids() -> list[int]:
    """dockerd and containerd (not the shims of running containers, which stay as they are)."""
    return _pids(lambda entry: (entry / "comm").read_text().strip() in ("dockerd", "containerd"))


def ping_latencies(app: Any, count: int) -> list[float]:
    samples = []
    for i in range(count):
        sent = time.monotonic()
        app.send_task(PING_TASK, kwargs={"value": i}).get(timeout=60)
        samples.append(time.monotonic() - sent)
    return samples


def main() -> int:  # noqa: PLR0912, PLR0915 - one benchmark, read top to bottom
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs-per-shard", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=8, help="idle/saturated block pairs")
    parser.add_argument("--pings", type=int, default=40, help="pings per block")
    parser.add_argument(
        "--backlog-per-shard", type=int, default=6, help="phases queued per shard each round"
    )
    parser.add_argument(
        "--busy-seconds", type=float, default=2.0, help="length of each saturating phase"
    )
    parser.add_argument(
        "--job-cpu-shares",
        type=int,
        default=None,
        help="MOONMIND_CODEX_JOB_CPU_SHARES for the workers (default: the image's own default)",
    )
    parser.add_argument(
        "--job-cpuset",
        default=None,
        help="MOONMIND_CODEX_JOB_CPUSET for the workers, e.g. 1 (default: any core)",
    )
    parser.add_argument(
        "--worker-cpuset",
        default=None,
        help="cores of the shard worker containers, e.g. 1 (default: any core)",
    )
    parser.add_argument(
        "--default-path-cpuset",
        default=None,
        help="cores of the default queue's path: this producer, the default worker, the broker "
        "and its port proxy, e.g. 0 (default: any core)",
    )
    parser.add_argument(
        "--engine-cpuset",
        default=None,
        help="cores of dockerd and containerd while measuring (and so of the container churn "
        "they start), e.g. 1 (default: any core); restored at the end",
    )
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    client = docker.from_env()
    tag = secrets.token_hex(3)
    work = Path(tempfile.mkdtemp(prefix="mmc-bench-runs-"))
    state = work / "state"
    state.mkdir()
    os.chown(state, WORKER_UID, WORKER_UID)
    fleet_tag = f"benchruns-{tag}"
    volumes = [client.volumes.create(f"mmc-test-{fleet_tag}-auth-{n}") for n in range(SHARDS)]
    workers: list[Any] = []
    default_worker = None
    worker_env = {}
    if args.job_cpu_shares is not None:
        worker_env["MOONMIND_CODEX_JOB_CPU_SHARES"] = str(args.job_cpu_shares)
    if args.job_cpuset is not None:
        worker_env["MOONMIND_CODEX_JOB_CPUSET"] = args.job_cpuset
    load_before = os.getloadavg()
    if args.default_path_cpuset is not None:
        # Before any thread or child starts: the producer's threads and the default worker
        # inherit the mask.
        os.sched_setaffinity(0, parse_cpus(args.default_path_cpuset))
    engine_before: dict[int, set[int]] = {}
    try:
        for volume in volumes:
            api_key_login(volume.name)
        with running_broker(client, work) as url:
            url_file = work / "broker_url"
            url_file.write_text(url)
            url_file.chmod(0o444)
            for n in range(SHARDS):
                workers.append(
                    start_worker(
                        client,
                        fleet_tag,
                        url_file,
                        state,
                        n,
                        f"mmc-bench-{tag}-w{n}",
                        volumes[n].name,
                        extra_env=worker_env,
                        cpuset=args.worker_cpuset,
                    )
                )
            for worker in workers:
                assert " ready." in wait_for_log(worker, " ready.", 90)
            settings = Settings(
                broker_url=url, shard_count=SHARDS, database_url=producer_database_url(state)
            )
            default_worker = start_default_worker(url, settings.database_url, "default@bench")
            store = RunStore.open(settings.database_url)
            app = create_app(settings, store)
            # Warm-up: connections, the default worker's first tasks, the reply queue.
            ping_latencies(app, 20)

            # (a) throughput: every run submitted at once, the shards work in parallel.
            keys = repositories(settings, args.runs_per_shard)
            submitted: dict[str, float] = {}
            began = time.time()
            for i, key in enumerate(keys):
                run_id = f"bench-{tag}-{i}"
                submitted[run_id] = time.time()
                submit_run(
                    app,
                    {
                        "run_id": run_id,
                        "repository": key,
                        "phases": [{"name": "noop", "command": ["true"]}],
                    },
                    settings,
                    store,
                )
            finished = wait_all(store, list(submitted), 900)
            elapsed = max(finished.values()) - began
            per_run = distribution([finished[r] - submitted[r] for r in submitted])
            per_minute = len(submitted) / elapsed * 60

            # (b) default-queue latency: idle and saturated blocks, alternating.
            port = url.rsplit(":", 1)[1].split("/")[0]
            broker = broker_container(client, url)
            if args.default_path_cpuset is not None:
                # The broker's port proxy with the broker: dockerd starts it with the engine's
                # cores, and on a fleet the broker's unit moves it (moonmind_codex_broker_cpuset).
                broker.update(cpuset_cpus=args.default_path_cpuset)
                pin_threads(
                    [*pids_in_container(broker.id), *pids_of(f"-host-port {port} ")],
                    parse_cpus(args.default_path_cpuset),
                )
            if args.engine_cpuset is not None:
                engine_before = pin_threads(engine_pids(), parse_cpus(args.engine_cpuset))
            meter = Meter(
                {
                    "producer": [os.getpid()],
                    "broker": pids_in_container(broker.id),
                    "broker_port_proxy": pids_of(f"-host-port {port} "),
                    "default_worker": [default_worker.pid],
                },
                {"broker": broker.id, **{f"worker_{n}": w.id for n, w in enumerate(workers)}},
            )
            idle_samples: list[float] = []
            saturated_samples: list[float] = []
            idle_blocks: list[dict[str, Any]] = []
            saturated_blocks: list[dict[str, Any]] = []
            rounds: list[dict[str, float]] = []
            shares_seen: set[int] = set()
            backlog_keys = repositories(settings, args.backlog_per_shard)
            for r in range(args.rounds):
                before = meter.read()
                idle_block = ping_latencies(app, args.pings)
                idle_blocks.append(Meter.delta(before, meter.read(), args.pings))
                idle_samples += idle_block
                backlog = []
                for i, key in enumerate(backlog_keys):
                    run_id = f"bench-{tag}-busy-{r}-{i}"
                    backlog.append(run_id)
                    submit_run(
                        app,
                        {
                            "run_id": run_id,
                            "repository": key,
                            "phases": [
                                {"name": "busy", "command": ["sleep", f"{args.busy_seconds:g}"]}
                            ],
                        },
                        settings,
                        store,
                    )
                # Saturated: every shard is running a job and has more queued behind it.
                deadline = time.monotonic() + 60
                while {x.shard for x in store.list_runs(status="running")} != set(range(SHARDS)):
                    assert time.monotonic() < deadline, "the shards did not all start a job"
                    time.sleep(0.05)
                shares_seen.update(job_cpu_shares_seen(client, [v.name for v in volumes]))
                before = meter.read()
                saturated_block = ping_latencies(app, args.pings)
                saturated_blocks.append(Meter.delta(before, meter.read(), args.pings))
                saturated_samples += saturated_block
                # Still saturated at the block's end: every shard had work left.
                left = set()
                for run_id, key in zip(backlog, backlog_keys, strict=True):
                    record = store.get_run(run_id)
                    if record is None or record.status not in ("succeeded", "failed", "blocked"):
                        left.add(int(route_key(key, settings).queue.rsplit("-", 1)[1]))
                rounds.append(
                    {
                        "idle_p50": percentile(idle_block, 50),
                        "saturated_p50": percentile(saturated_block, 50),
                        "saturated_to_the_end": float(left == set(range(SHARDS))),
                    }
                )
                print(
                    f"round {r + 1}/{args.rounds}: ping p50 idle "
                    f"{rounds[-1]['idle_p50'] * 1000:.1f} ms, saturated "
                    f"{rounds[-1]['saturated_p50'] * 1000:.1f} ms",
                    flush=True,
                )
                wait_all(store, backlog, 900)
            idle = distribution(idle_samples)
            saturated = distribution(saturated_samples)
    finally:
        restore_threads(engine_before)
        if default_worker is not None:
            default_worker.terminate()
            default_worker.wait(timeout=30)
        for worker in workers:
            worker.remove(force=True)
        # Job and probe containers a removed worker left behind hold the auth volumes.
        for volume in volumes:
            for left in client.containers.list(
                all=True, filters={"label": f"io.moonmind.codex.volume={volume.name}"}
            ):
                left.remove(force=True)
        for leftover in client.volumes.list(filters={"name": f"mmc-test-{fleet_tag}-"}):
            leftover.remove(force=True)
    load_after = os.getloadavg()
    ratio = saturated["p50"] / idle["p50"]
    ratio_p95 = saturated["p95"] / idle["p95"]
    round_ratios = [r["saturated_p50"] / r["idle_p50"] for r in rounds]
    saturated_rounds = sum(int(r["saturated_to_the_end"]) for r in rounds)
    cpu_idle = summarise_blocks(idle_blocks)
    cpu_saturated = summarise_blocks(saturated_blocks)
    details = machine()
    print("machine:", json.dumps(details))
    print(
        f"load average (1, 5, 15 min): before {' '.join(f'{x:.2f}' for x in load_before)}, "
        f"after {' '.join(f'{x:.2f}' for x in load_after)}"
    )
    print(
        f"throughput: {len(submitted)} one-phase runs over {SHARDS} shards in {elapsed:.1f} s = "
        f"{per_minute:.1f} runs/min"
    )
    print(format_distribution("submit -> run succeeded", per_run))
    print(
        f"default-queue pings: {args.rounds} rounds x {args.pings} per block, idle and "
        f"saturated blocks alternating; saturating load: {args.backlog_per_shard} phases "
        f"(`sleep {args.busy_seconds:g}`, pre-flight included) per shard per round; job "
        f"containers' CpuShares seen: {sorted(shares_seen)} (0 = engine default 1024); job "
        f"cores: {args.job_cpuset or 'any'}; shard worker cores: {args.worker_cpuset or 'any'}; "
        f"default path cores: {args.default_path_cpuset or 'any'}; engine cores: "
        f"{args.engine_cpuset or 'any'}; "
        f"every shard still had work at the end of {saturated_rounds}/{len(rounds)} "
        "saturated blocks"
    )
    print(format_distribution("default-queue ping, Codex idle", idle))
    print(format_distribution("default-queue ping, Codex saturated", saturated))
    for name, summary in (("idle", cpu_idle), ("saturated", cpu_saturated)):
        waits = ", ".join(f"{k} {v:.2f}" for k, v in summary["runqueue_wait_ms_per_ping"].items())
        cores = ", ".join(
            f"{k} {'n/a' if v is None else f'{v:.3f}'}"
            for k, v in summary["container_cores"].items()
        )
        print(
            f"CPU, {name} blocks: machine busy {summary['busy_cores']:.2f} of "
            f"{os.cpu_count()} cores; run-queue wait per ping (ms): {waits}; "
            f"container cores: {cores}"
        )
    print(
        "per-round p50 ratios: "
        + " ".join(f"{x:.2f}" for x in round_ratios)
        + f" (median {statistics.median(round_ratios):.3f})"
    )
    print(f"ratio saturated/idle p50: {ratio:.3f}, p95: {ratio_p95:.3f}")
    targets = [
        target_row(
            "default-queue ping p50, Codex saturated / idle", ratio, TARGET_RATIO, "<=", "{:.2f}x"
        )
    ]
    return finish(
        targets,
        args.json,
        machine=details,
        load_average_before=load_before,
        load_average_after=load_after,
        runs=len(submitted),
        shards=SHARDS,
        runs_per_minute=per_minute,
        submit_to_succeeded=per_run,
        rounds=args.rounds,
        pings_per_block=args.pings,
        backlog_per_shard=args.backlog_per_shard,
        busy_seconds=args.busy_seconds,
        job_cpu_shares_seen=sorted(shares_seen),
        job_cpuset=args.job_cpuset,
        worker_cpuset=args.worker_cpuset,
        default_path_cpuset=args.default_path_cpuset,
        engine_cpuset=args.engine_cpuset,
        ping_idle=idle,
        ping_saturated=saturated,
        per_round=rounds,
        saturated_to_the_end_rounds=saturated_rounds,
        cpu_idle_blocks=cpu_idle,
        cpu_saturated_blocks=cpu_saturated,
        ratio_saturated_idle_p50=ratio,
        ratio_saturated_idle_p95=ratio_p95,
        per_round_ratio_median=statistics.median(round_ratios),
    )


if __name__ == "__main__":
    sys.exit(main())
