# The two commands a newcomer needs (see README): `make deploy` and `make test`.
# Both are safe to run again; set-up work already done is skipped.
SHELL := /bin/bash
VENV := .venv
INVENTORY ?= inventory/local
# Explicit, so Ansible uses it even from a world-writable checkout (where it would ignore it).
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: help setup deploy teardown login-check lint check test test-python test-molecule fuzz bench release

help:
	@echo "make deploy      install the engine, build images, run playbooks/site.yml on $(INVENTORY)"
	@echo "make teardown    stop and remove workers, the job network and broker; volumes (logins) are kept"
	@echo "make login-check print the per-shard login table"
	@echo "make check       the inner loop: lint and the unit tests (under 2 minutes)"
	@echo "make test        everything CI runs: lint, unit, integration, Ansible, Molecule"
	@echo "make fuzz        the random search of the fuzz modules for FUZZ_SECONDS (default 600)"
	@echo "make bench       benchmarks under bench/ (results printed and written to bench/results/)"
	@echo "make release     the wheel, the collection and the image archives of one version, with SHA256SUMS"

setup:
	bash scripts/setup.sh

deploy: setup
	$(VENV)/bin/ansible-playbook -i $(INVENTORY) playbooks/site.yml

teardown:
	$(VENV)/bin/ansible-playbook -i $(INVENTORY) playbooks/teardown.yml

login-check:
	$(VENV)/bin/ansible-playbook -i $(INVENTORY) playbooks/login_check.yml

lint:
	bash scripts/lint.sh

check:
	bash scripts/lint.sh
	$(VENV)/bin/pytest -q tests/unit

test: setup
	bash scripts/test.sh

test-python:
	$(VENV)/bin/pytest

test-molecule:
	bash scripts/molecule-test.sh

fuzz:
	bash scripts/fuzz.sh

bench: setup
	bash scripts/bench.sh

release: setup
	bash scripts/release.sh
