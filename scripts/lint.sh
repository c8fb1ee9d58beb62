#!/usr/bin/env bash
# Static checks: ruff, mypy, yamllint, ansible-lint (production profile), shellcheck when present.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv/bin
export ANSIBLE_CONFIG="$PWD/ansible.cfg"
echo "== ruff";         "$venv/ruff" check .
echo "== ruff format";  "$venv/ruff" format --check moonmind_codex tests bench harness
echo "== mypy";         "$venv/mypy"
echo "== yamllint";     "$venv/yamllint" --strict .
echo "== ansible-lint"; "$venv/ansible-lint" --profile production
if command -v shellcheck >/dev/null 2>&1; then
  echo "== shellcheck"; shellcheck scripts/*.sh .ci/run images/job/moonmind-codex-job \
    images/job/moonmind-codex-probe images/broker/moonmind-codex-broker \
    images/database/moonmind-codex-database \
    roles/moonmind_codex_job_network/files/moonmind-codex-job-firewall
fi
