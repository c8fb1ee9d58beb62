#!/usr/bin/env bash
# Everything CI runs: lint, then three lanes side by side, each in the order that fails fastest.
#   hosts lanes: tests/ansible (real ansible-playbook runs on systemd + Docker host containers,
#               each with its own engine), split in two (see below);
#   local lane: every other test folder (unit, real Docker/RabbitMQ/Codex CLI integration on
#               this machine's engine, packaging), then mutation testing of the pure modules,
#               then Molecule (after the timing-sensitive integration tests, so the two
#               heaviest host workloads never overlap them).
# The lanes share no Docker object (host containers are mmc-test-*/mmc-molecule-*, integration
# objects have their own unique names). Together they keep both cores of the 2-core machine busy
# (measured: about 5 % idle), so the lanes balance wall time; only less work makes the run
# shorter. The local lane prints as it goes; the hosts lanes' logs follow it.
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
hosts_log=var/ci/hosts-lane
EXPECTED_STAGES=6  # lint, three local stages, two hosts lanes
: >"$stages"

# CPU seconds (user + system) of the commands this shell ran and waited for, into CHILDREN_CPU:
# `times`' second line. Each lane is its own background shell, so the difference around a stage
# is that stage's own processes (pytest, ansible-playbook, Molecule...); what its containers use
# is not in it. Called as is, never in $(...): a forked shell's counts start from zero.
CHILDREN_CPU=0
children_cpu() {
  local file
  file=$(mktemp)
  times >"$file"
  CHILDREN_CPU=$(awk 'NR == 2 {
    split($1, u, /[ms]/); split($2, s, /[ms]/)
    printf "%.0f", u[1] * 60 + u[2] + s[1] * 60 + s[2]
  }' "$file")
  rm -f "$file"
}

# The machine's busy CPU seconds so far (every core; /proc/stat counts in USER_HZ ticks).
machine_busy_cpu() {
  awk -v hz="$(getconf CLK_TCK)" '/^cpu / { printf "%.0f", ($2 + $3 + $4 + $7 + $8) / hz }' /proc/stat
}

busy0=$(machine_busy_cpu)

# stage LANE NAME COMMAND...: run COMMAND, record its time, its own CPU and its result, return
# its status.
stage() {
  local lane=$1 name=$2 t0=$SECONDS cpu0 status=0
  shift 2
  children_cpu
  cpu0=$CHILDREN_CPU
  echo "== [$lane] $name"
  "$@" || status=$?
  children_cpu
  printf '%s\t%s\t%s\t%s\t%s\n' "$lane" "$name" "$((SECONDS - t0))" \
    "$((CHILDREN_CPU - cpu0))" \
    "$([ "$status" -eq 0 ] && echo passed || echo "FAILED (exit $status)")" >>"$stages"
  return "$status"
}

# The hosts lane is two lanes: test_fleet_changes.py (one host, about thirteen playbook runs) on
# one, every other tests/ansible module on the other, so that no single lane holds every host
# test (the CPU is shared either way; see above).
FLEET_CHANGES=tests/ansible/test_fleet_changes.py
hosts_lane_changes() {
  stage hosts-1 "pytest $FLEET_CHANGES" .venv/bin/pytest --durations=15 "$FLEET_CHANGES"
}
hosts_lane_rest() {
  stage hosts-2 "pytest tests/ansible (the rest)" \
    .venv/bin/pytest --durations=15 tests/ansible --ignore "$FLEET_CHANGES"
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
hosts_lane_changes >"$hosts_log-1.log" 2>&1 &
changes_pid=$!
hosts_lane_rest >"$hosts_log-2.log" 2>&1 &
rest_pid=$!
echo "== hosts lanes started (logs: $hosts_log-1.log, $hosts_log-2.log)"
# In a shell of its own too, so that no lane's processes are counted in another's stage CPU.
local_lane &
wait $! "$changes_pid" "$rest_pid"
for log in "$hosts_log-1.log" "$hosts_log-2.log"; do
  echo "== $log"
  cat "$log"
done

total=$((SECONDS - start))
busy=$(($(machine_busy_cpu) - busy0))
cores=$(nproc)
echo
echo "== stages ($total s in all; the lanes ran side by side)"
printf '%-7s  %-36s  %7s  %7s  %s\n' lane stage seconds cpu-s result
failed=0
own=0
while IFS=$'\t' read -r lane name seconds cpu result; do
  printf '%-7s  %-36s  %7s  %7s  %s\n' "$lane" "$name" "$seconds" "$cpu" "$result"
  own=$((own + cpu))
  [ "$result" = passed ] || failed=1
done <"$stages"
# cpu-s is each stage's own processes; the rest of the machine's busy time is the containers
# they started (hosts, brokers, workers, jobs) and the engine. The run is CPU-bound when the
# machine was busy nearly all of the time it had: then only less work makes it shorter.
echo "machine: $busy CPU-s busy of $((total * cores)) ($cores cores x $total s," \
  "$((100 * busy / (total * cores > 0 ? total * cores : 1))) %); the stages' own processes" \
  "$own CPU-s, their containers and the engine the other $((busy - own))"
if [ "$(wc -l <"$stages")" -ne "$EXPECTED_STAGES" ]; then
  echo "expected $EXPECTED_STAGES stages in $stages, found $(wc -l <"$stages"): a stage did not report"
  failed=1
fi
if [ "$failed" -ne 0 ]; then
  echo "some checks FAILED ($total s)"
  exit 1
fi
echo "all checks passed in $total s"
