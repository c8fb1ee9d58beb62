"""Pre-flight latency through a real container, beside the bare `codex login status` run.

Both are measured in the same run on the same volume: the full pre-flight (probe container
with ownership/mode/writability checks + the real CLI, evaluated) and the minimum a check can
cost here (`docker run --rm job codex login status`). Target: pre-flight p50 <= 1.0 s.
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
import time
from pathlib import Path

import docker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.stats import (
    distribution,
    finish,
    format_distribution,
    machine,
    target_row,
)
from harness.logins import api_key_login
from moonmind_codex.engine.preflight import run_preflight
from moonmind_codex.settings import Settings

TARGET_P50_S = 1.0
JOB_IMAGE = "moonmind-codex/job:latest"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    client = docker.from_env()
    volume = f"mmc-bench-auth-{secrets.token_hex(3)}"
    client.volumes.create(volume)
    try:
        api_key_login(volume)  # a real `codex login --with-api-key`, fake key on stdin
        settings = Settings(shard=0, auth_volume_override=volume, host_name="bench")
        run_preflight(settings, 0, client)  # warm-up: page cache, image layers
        full, bare = [], []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            result = run_preflight(settings, 0, client)
            full.append(time.perf_counter() - t0)
            assert result.status == "ok", result.message()
            t0 = time.perf_counter()
            subprocess.run(
                [
                    "docker",
                    "run",
                    "--rm",
                    "--network",
                    "none",
                    "-v",
                    f"{volume}:/home/app/.codex",
                    JOB_IMAGE,
                    "codex",
                    "login",
                    "status",
                ],
                check=True,
                capture_output=True,
            )
            bare.append(time.perf_counter() - t0)
    finally:
        client.volumes.get(volume).remove(force=True)
    d_full, d_bare = distribution(full), distribution(bare)
    details = machine()
    print("machine:", json.dumps(details))
    print(format_distribution("pre-flight (run_preflight)", d_full))
    print(format_distribution("bare docker run codex login status", d_bare))
    print(
        f"ratio pre-flight/bare: p50 {d_full['p50'] / d_bare['p50']:.2f}x, "
        f"p95 {d_full['p95'] / d_bare['p95']:.2f}x"
    )
    targets = [target_row("pre-flight p50 (s)", d_full["p50"], TARGET_P50_S, "<=", "{:.2f} s")]
    return finish(targets, args.json, machine=details, preflight=d_full, bare_cli=d_bare)


if __name__ == "__main__":
    sys.exit(main())
