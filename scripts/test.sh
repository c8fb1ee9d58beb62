#!/usr/bin/env bash
# Everything CI runs: lint, then two lanes side by side, each in the order that fails fastest.
#   hosts lane: tests/ansible (real ansible-playbook runs on systemd + Docker host containers,
#               each with its own engine);
#   local lane: every other test folder (unit, real Docker/RabbitMQ/Codex CLI integration on
#               this machine's engine, packaging), then mutation testing of the pure modules,
#               then Molecule (after the timing-sensitive integration tests, so the two
#               heaviest host workloads never overlap them).
# The lanes share no Docker object (host containers are mmc-test-*/mmc-molecule-*, integration
# objects have their own unique names) and mostly wait on engines and brokers, so they overlap
# well even on two cores. The local lane prints as it goes; the hosts lane's log follows it.
#
# A red stage does not hide the stages after it: every stage runs, and the run ends with a table
# of every stage, its lane, its time and its result (also in var/ci/stages.tsv); the exit status
# is 1 when any stage failed.
# Expects scripts/setup.sh to have run (make test does that).
set -uo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
mkdir -p var/ci
stages=var/ci/stages.tsv
hosts_log=var/ci/hosts-lane.log
: >"$stages"

# stage LANE NAME COMMAND...: run COMMAND, record its time and result, return its status.
stage() {
  local lane=$1 name=$2 t0=$SECONDS status=0
  shift 2
  echo "== [$lane] $name"
  "$@" || status=$?
  printf '%s\t%s\t%s\t%s\n' "$lane" "$name" "$((SECONDS - t0))" \
    "$([ "$status" -eq 0 ] && echo passed || echo "FAILED (exit $status)")" >>"$stages"
  return "$status"
}

hosts_lane() {
  stage hosts "pytest tests/ansible" .venv/bin/pytest --durations=15 tests/ansible
}

local_lane() {
  local failed=0
  stage local "pytest (all but tests/ansible)" \
    .venv/bin/pytest --durations=15 tests --ignore=tests/ansible || failed=1
  stage local "mutation floor" bash scripts/mutation.sh || failed=1
  stage local "molecule" bash scripts/molecule-test.sh || failed=1
  return "$failed"
}

stage lint "lint" bash scripts/lint.sh
hosts_lane >"$hosts_log" 2>&1 &
hosts_pid=$!
echo "== hosts lane started (log: $hosts_log)"
local_lane
wait "$hosts_pid"
echo "== hosts lane log"
cat "$hosts_log"

total=$((SECONDS - start))
echo
echo "== stages ($total s in all; the lanes ran side by side)"
printf '%-6s  %-32s  %7s  %s\n' lane stage seconds result
failed=0
while IFS=$'\t' read -r lane name seconds result; do
  printf '%-6s  %-32s  %7s  %s\n' "$lane" "$name" "$seconds" "$result"
  [ "$result" = passed ] || failed=1
done <"$stages"
if [ "$(wc -l <"$stages")" -ne 5 ]; then
  echo "expected 5 stages in $stages, found $(wc -l <"$stages"): a stage did not report"
  failed=1
fi
if [ "$failed" -ne 0 ]; then
  echo "some checks FAILED ($total s)"
  exit 1
fi
echo "all checks passed in $total s"
