#!/usr/bin/env bash
# Molecule scenario `default`: create two systemd + Docker worker hosts and a broker host,
# converge them with playbooks/site.yml (images loaded from archives, as on air-gapped hosts),
# check idempotence, verify with testinfra, destroy.
set -euo pipefail
cd "$(dirname "$0")/.."
for image in host worker job broker database; do
  docker image inspect "moonmind-codex/$image:latest" >/dev/null 2>&1 \
    || { echo "molecule-test.sh: image moonmind-codex/$image:latest is missing; run scripts/setup.sh" >&2; exit 1; }
done
# Archives for the images role's `load` mode; rewritten only when an image changed.
bash scripts/setup.sh --images-only --only worker,job,broker,database --save-archives var/image-archives
export PATH="$PWD/.venv/bin:$PATH"
export ANSIBLE_FORCE_COLOR=0 PY_COLORS=0
exec molecule test --scenario-name default
