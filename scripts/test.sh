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
# Expects scripts/setup.sh to have run (make test does that).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
bash scripts/lint.sh
mkdir -p var/ci
hosts_log=var/ci/hosts-lane.log

hosts_lane() {
  echo "== pytest tests/ansible"
  .venv/bin/pytest --durations=15 tests/ansible
}

local_lane() {
  echo "== pytest (all but tests/ansible, which the hosts lane runs)"
  .venv/bin/pytest --durations=15 tests --ignore=tests/ansible || return
  echo "== mutation"
  bash scripts/mutation.sh || return
  echo "== molecule"
  bash scripts/molecule-test.sh
}

hosts_lane >"$hosts_log" 2>&1 &
hosts_pid=$!
echo "== hosts lane started (log: $hosts_log)"
local_status=0
local_lane || local_status=$?
hosts_status=0
wait "$hosts_pid" || hosts_status=$?
echo "== hosts lane log"
cat "$hosts_log"
echo "== local lane exit $local_status, hosts lane exit $hosts_status, $((SECONDS - start)) s"
if [ "$local_status" -ne 0 ] || [ "$hosts_status" -ne 0 ]; then
  exit 1
fi
echo "all checks passed in $((SECONDS - start)) s"
