#!/usr/bin/env bash
# Mutation testing of the pure modules ([tool.mutmut] in pyproject.toml) with their unit tests,
# then the floor: every module must kill at least 90% of its mutants, not counting the
# equivalent ones listed in tests/mutation/equivalent.txt (scripts/mutation_floor.py).
# Always a fresh run: mutmut keeps verdicts in mutants/ across runs, and a verdict cached
# before a test changed would be stale. Hypothesis runs its short, fixed-seed "mutation"
# profile. To iterate on one module: .venv/bin/mutmut run 'moonmind_codex.core.messages.*'
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
rm -rf mutants && mkdir mutants
export HYPOTHESIS_PROFILE=mutation
# mutmut redraws a progress line many times a second: keep that out of the CI log.
if ! .venv/bin/mutmut run --max-children 2 >mutants/run.log 2>&1; then
  tr '\r' '\n' <mutants/run.log | tail -n 60
  echo "mutmut run failed (full output: mutants/run.log)"
  exit 1
fi
tr '\r' '\n' <mutants/run.log | grep -E 'mutations/second' || true
echo "mutmut ran in $((SECONDS - start)) s"
.venv/bin/python scripts/mutation_floor.py
