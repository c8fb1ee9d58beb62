#!/usr/bin/env bash
# The random search the landing gate does not run: the fuzz modules under Hypothesis's `fuzz`
# profile (random, ten times the examples), again and again with new seeds until
# FUZZ_SECONDS (default 600) have passed. Stops at the first failure and prints the seed that
# replays it:
#   HYPOTHESIS_PROFILE=fuzz .venv/bin/pytest <module> --hypothesis-seed=<seed>
# Keep what it finds as an @example beside the test (Hypothesis writes one as a patch under
# var/hypothesis/patches/, for `git apply`), then fix the oracle or the product.
# FUZZ_TESTS: the modules to search (default: tests/unit/test_fuzz_*.py).
set -uo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-600}
case "$seconds" in
  '' | *[!0-9]*) echo "fuzz.sh: FUZZ_SECONDS=$seconds is not a whole number of seconds" >&2; exit 64 ;;
esac
# shellcheck disable=SC2206 # a list of paths (globs expanded here) is intended
tests=(${FUZZ_TESTS:-tests/unit/test_fuzz_*.py})
# Hypothesis's own files (the patches) stay out of the checkout's tracked tree.
export HYPOTHESIS_STORAGE_DIRECTORY=var/hypothesis
deadline=$((SECONDS + seconds))
round=0
while [ "$SECONDS" -lt "$deadline" ] || [ "$round" -eq 0 ]; do
  round=$((round + 1))
  seed=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
  echo "== fuzz round $round, seed $seed ($((deadline - SECONDS)) s left)"
  left=$((deadline - SECONDS))
  [ "$left" -gt 0 ] || left=1
  status=0
  # The round is cut at the deadline: time is the budget, not the number of rounds.
  HYPOTHESIS_PROFILE=fuzz timeout --signal=INT "$left" .venv/bin/pytest -q -x \
    -p no:cacheprovider --hypothesis-seed="$seed" "${tests[@]}" || status=$?
  if [ "$status" -eq 124 ]; then
    echo "fuzz: round $round cut at the deadline"
    break
  fi
  if [ "$status" -ne 0 ]; then
    echo "fuzz: a failure in round $round; replay it with"
    echo "  HYPOTHESIS_PROFILE=fuzz .venv/bin/pytest ${tests[*]} --hypothesis-seed=$seed"
    exit 1
  fi
done
echo "fuzz: $round round(s) in $seconds s found nothing"
