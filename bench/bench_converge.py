"""First converge and idempotent re-run of playbooks/site.yml on a systemd + Docker host.

One host (the Molecule host image: systemd as PID 1, its own Docker engine) owns all shards and
the broker. For each fleet size (3 and 12 shards) a fresh host is created, the first converge
is timed (images arrive from archives), then the re-run, which must report no change.
Target: re-run of 3 shards in at most 45 s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.stats import machine
from harness.hosts import remove_host, start_host

REPO = Path(__file__).resolve().parents[1]
HOST = "mmc-bench-converge-host"
TARGET_RERUN_S = 45.0


def create() -> None:
    start_host(HOST)


def destroy() -> None:
    remove_host(HOST)


def inventory(directory: Path, shards: int) -> Path:
    path = directory / f"hosts-{shards}.yml"
    path.write_text(
        json.dumps(
            {
                "all": {
                    "vars": {
                        "ansible_connection": "community.docker.docker",
                        "ansible_become": False,
                        "ansible_python_interpreter": "/usr/bin/python3",
                        "moonmind_codex_shard_count": shards,
                        "moonmind_codex_images_source": "load",
                        "moonmind_codex_images_archive_dir": str(REPO / "var" / "image-archives"),
                        "moonmind_codex_broker_password": "bench-not-a-secret",
                        "moonmind_codex_broker_bind_address": "127.0.0.1",
                    },
                    "children": {
                        "codex_workers": {
                            "hosts": {HOST: {"moonmind_codex_shards": list(range(shards))}}
                        },
                        "codex_broker": {"hosts": {HOST: {}}},
                    },
                }
            }
        )
    )
    return path


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="3,12")
    parser.add_argument("--json", default="")
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
    rows = []
    work = Path(tempfile.mkdtemp(prefix="mmc-bench-converge-"))
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            create()
            first, first_changed = converge(inventory(work, size))
            rerun, rerun_changed = converge(inventory(work, size))
            rows.append(
                {
                    "shards": size,
                    "first_s": first,
                    "first_changed": first_changed,
                    "rerun_s": rerun,
                    "rerun_changed": rerun_changed,
                }
            )
            destroy()
    finally:
        destroy()
    print("machine:", json.dumps(machine()))
    print(
        f"{'shards':>6} {'first converge':>15} {'changed':>8} {'re-run':>8} {'changed':>8} "
        f"{'first/re-run':>13}"
    )
    for r in rows:
        print(
            f"{r['shards']:>6} {r['first_s']:>14.1f}s {r['first_changed']:>8} "
            f"{r['rerun_s']:>7.1f}s {r['rerun_changed']:>8} {r['first_s'] / r['rerun_s']:>12.1f}x"
        )
    if len(rows) > 1:
        print(
            f"re-run {rows[-1]['shards']} vs {rows[0]['shards']} shards: "
            f"{rows[-1]['rerun_s'] / rows[0]['rerun_s']:.2f}x"
        )
    three = next((r for r in rows if r["shards"] == 3), None)
    met = (
        three is not None
        and three["rerun_s"] <= TARGET_RERUN_S
        and all(r["rerun_changed"] == 0 for r in rows)
    )
    print(
        f"target: 3-shard re-run <= {TARGET_RERUN_S:.0f} s with no change: "
        f"{'MET' if met else 'NOT MET'}"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"machine": machine(), "rows": rows, "target_met": met}, indent=2)
        )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
