#!/usr/bin/env bash
# Everything CI runs, in the order that fails fastest: lint, the pytest suite (unit, real
# Docker/RabbitMQ/Codex CLI integration, real ansible-playbook runs, and tests/packaging: the
# Ansible collection and the wheel built, installed outside the checkout and run), then Molecule
# on systemd + Docker hosts. Expects scripts/setup.sh to have run (make test does that).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
bash scripts/lint.sh
echo "== pytest"
.venv/bin/pytest
echo "== mutation"; bash scripts/mutation.sh
echo "== molecule"
bash scripts/molecule-test.sh
echo "all checks passed in $((SECONDS - start)) s"
