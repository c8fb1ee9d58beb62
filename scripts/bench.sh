#!/usr/bin/env bash
# All benchmarks, each printing its distributions and side-by-side ratios, and writing JSON
# results with the machine's details to bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench/results
py=.venv/bin/python
status=0
$py bench/bench_routing.py --json bench/results/routing.json || status=1
$py bench/bench_preflight.py --json bench/results/preflight.json || status=1
$py bench/bench_enqueue.py --json bench/results/enqueue.json || status=1
$py bench/bench_runs.py --json bench/results/runs.json || status=1
$py bench/bench_secure.py --json bench/results/secure.json || status=1
$py bench/bench_converge.py --json bench/results/converge.json || status=1
exit "$status"
