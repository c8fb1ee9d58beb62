"""First converge and idempotent re-run of playbooks/site.yml on a systemd + Docker host.

One host (the Molecule host image: systemd as PID 1, its own Docker engine) owns all shards and
the broker. For each fleet size (3 and 12 shards) a fresh host is created, the first converge
is timed (images arrive from archives), then the idempotent re-run, several times (the fastest is
kept: the least disturbed by other work on the machine); every re-run must report no change.
Targets (issue 7, item 10): the 12-shard re-run at most 1.5x the 3-shard re-run (2.06x before the
per-host login check, volume check and systemd calls), and the 3-shard re-run no slower than 22 s.
Writes bench/results/converge.{json,txt}.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.stats import bench_record, format_target, machine, target_row, write_record
from harness.hosts import fleet_inventory, remove_host, start_host, write_inventory

REPO = Path(__file__).resolve().parents[1]
# Unique per invocation: two runs, or a leftover of a killed one, never share a host container.
HOST = f"mmc-bench-converge-{secrets.token_hex(3)}"
TARGET_RERUN_3_S = 22.0
TARGET_RATIO_12_TO_3 = 1.5
TARGET_RERUN_CHANGED = 0
RESULTS = REPO / "bench" / "results"


def create() -> None:
    start_host(HOST)


def destroy() -> None:
    remove_host(HOST)


def inventory(directory: Path, shards: int) -> Path:
    return write_inventory(
        directory / f"hosts-{shards}.yml",
        fleet_inventory(
            HOST,
            list(range(shards)),
            shards,
            moonmind_codex_images_source="load",
            moonmind_codex_images_archive_dir=str(REPO / "var" / "image-archives"),
            moonmind_codex_broker_password="bench-not-a-secret",  # noqa: S106 (throw-away host)
        ),
    )


def converge(inv: Path) -> tuple[float, int]:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    t0 = time.perf_counter()
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            str(inv),
            str(REPO / "playbooks" / "site.yml"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
    )
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(done.stdout[-4000:] + done.stderr[-2000:])
    changed = sum(int(n) for n in re.findall(rf"{HOST}\s+:.*?changed=(\d+)", done.stdout))
    return elapsed, changed


def load_average() -> str:
    """1, 5 and 15 minute load averages: other work on the machine slows every run."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="3,12")
    parser.add_argument("--reruns", type=int, default=3, help="re-runs per size (fastest kept)")
    parser.add_argument("--json", default=str(RESULTS / "converge.json"))
    parser.add_argument("--txt", default=str(RESULTS / "converge.txt"))
    args = parser.parse_args()
    subprocess.run(
        [
            "bash",
            str(REPO / "scripts" / "setup.sh"),
            "--images-only",
            "--only",
            "worker,job,broker",
            "--save-archives",
            str(REPO / "var" / "image-archives"),
        ],
        check=True,
        capture_output=True,
    )
    rows: list[dict[str, Any]] = []
    load_before = load_average()
    work = Path(tempfile.mkdtemp(prefix="mmc-bench-converge-"))
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            create()
            first, first_changed = converge(inventory(work, size))
            reruns = [converge(inventory(work, size)) for _ in range(args.reruns)]
            rows.append(
                {
                    "shards": size,
                    "first_s": first,
                    "first_changed": first_changed,
                    "rerun_s": min(t for t, _ in reruns),
                    "reruns_s": [t for t, _ in reruns],
                    "rerun_changed": max(c for _, c in reruns),
                }
            )
            destroy()
    finally:
        destroy()
    details = {
        **machine(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }
    out = io.StringIO()
    print("machine:", json.dumps(details), file=out)
    print(
        f"{'shards':>6} {'first converge':>15} {'changed':>8} {'re-run':>8} {'changed':>8}"
        "  re-runs",
        file=out,
    )
    for r in rows:
        print(
            f"{r['shards']:>6} {r['first_s']:>14.1f}s {r['first_changed']:>8} "
            f"{r['rerun_s']:>7.1f}s {r['rerun_changed']:>8}  "
            + " ".join(f"{t:.1f}s" for t in r["reruns_s"]),
            file=out,
        )
    by_size = {r["shards"]: r for r in rows}
    ratio = (
        by_size[12]["rerun_s"] / by_size[3]["rerun_s"] if 3 in by_size and 12 in by_size else None
    )
    # A target whose fleet size was not run (--sizes) has no row: nothing was measured.
    targets = []
    if 3 in by_size:
        targets.append(
            target_row(
                "3-shard re-run (s)", by_size[3]["rerun_s"], TARGET_RERUN_3_S, "<=", "{:.0f} s"
            )
        )
    if ratio is not None:
        targets.append(
            target_row(
                "12-shard re-run / 3-shard re-run", ratio, TARGET_RATIO_12_TO_3, "<=", "{:.2f}x"
            )
        )
    targets.append(
        target_row(
            "tasks changed on a re-run",
            max(r["rerun_changed"] for r in rows),
            TARGET_RERUN_CHANGED,
            "==",
            "changed={}",
        )
    )
    for row in targets:
        print(format_target(row), file=out)
    print(out.getvalue(), end="")
    data = bench_record(targets, machine=details, rows=rows)
    if args.json:
        write_record(args.json, data)
    if args.txt:
        Path(args.txt).write_text(out.getvalue())
    return 0 if data["target_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
