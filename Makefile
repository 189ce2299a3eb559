# dchat — the two commands:  `make up` (the main job) and `make test` (all tests).
# Everything they need is installed by scripts/bootstrap.sh and tests/cluster/build.sh.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV   := .venv
PY     := $(VENV)/bin/python
PYTEST := $(VENV)/bin/pytest
export DCHAT_CACHE ?= $(HOME)/.cache/dchat
TEST_WORKERS ?= 4

.PHONY: help deps venv cluster cluster-down check lint typecheck imports test test-unit \
        test-integration test-e2e test-real-node up down crds rbac lock

help:
	@echo "make up     bring up the local cluster, install dchat, apply a sample DchatCluster"
	@echo "make test   install what is missing, run checks, unit, integration and e2e tests"
	@echo "make check  ruff, ruff format --check, mypy --strict, import-linter, hadolint"
	@echo "make down   stop the operator and the local cluster"

deps:
	@scripts/bootstrap.sh deps

venv:
	@scripts/bootstrap.sh venv

# Builds the control-plane binaries if not cached and starts the local cluster, unless
# KUBECONFIG names a reachable cluster (then nothing is built).
cluster: deps
	@tests/cluster/up.sh

cluster-down:
	@tests/cluster/down.sh

lint: venv
	$(VENV)/bin/ruff check operator node tests bench
	$(VENV)/bin/ruff format --check operator node tests bench

typecheck: venv
	$(VENV)/bin/mypy

imports: venv
	$(VENV)/bin/lint-imports

check: lint typecheck imports
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" scripts/lint-dockerfiles.sh

test-unit: venv
	$(PYTEST) -m unit

test-integration: deps venv
	$(PYTEST) -m integration

test-e2e: cluster venv
	$(PYTEST) -m e2e

# The real-node tier alone: the project's images on a real kubelet (tests/cluster/realnode.sh).
test-real-node: cluster venv
	@tests/cluster/real-node-status.sh
	$(PYTEST) -m real_node

# `make check` runs beside the unit tests (both CPU-bound, one core each); its output is
# printed after them. Then integration + e2e in two phases: the tests that only share the
# cluster run on TEST_WORKERS parallel workers (most of their time is waiting for pods,
# rollouts and minute boundaries; the real node's tests stay on one worker, xdist_group),
# and the `serial` ones (apiserver frozen, cluster-wide CRDs, CPU-saturating stress) alone.
# pytest exits 5 when it collects nothing: that fails the target, as it should.
test: deps venv cluster
	@start=$$SECONDS; \
	tests/cluster/real-node-status.sh; \
	check_log=$$(mktemp); \
	$(MAKE) --no-print-directory check >"$$check_log" 2>&1 & check_pid=$$!; \
	unit_rc=0; $(PYTEST) -m unit || unit_rc=$$?; \
	check_rc=0; wait $$check_pid || check_rc=$$?; \
	cat "$$check_log"; rm -f "$$check_log"; \
	if ((check_rc || unit_rc)); then echo "make test: check exit $$check_rc, unit exit $$unit_rc"; exit 1; fi; \
	$(PYTEST) -m "(integration or e2e) and not serial" -n $(TEST_WORKERS) --dist loadgroup; \
	$(PYTEST) -m "(integration or e2e) and serial"; \
	echo "make test: all green in $$((SECONDS - start)) s"

up: deps venv
	@scripts/up.sh

down:
	@scripts/up.sh --down

crds: venv
	$(VENV)/bin/dchat-operator crd > crds/dchat.dev_dchatclusters.yaml
	$(VENV)/bin/dchat-operator crd --kind DchatBackup > crds/dchat.dev_dchatbackups.yaml
	$(VENV)/bin/dchat-operator crd --kind DchatRestore > crds/dchat.dev_dchatrestores.yaml

rbac: venv
	$(VENV)/bin/dchat-operator rbac > manifests/base/rbac.yaml
	$(VENV)/bin/dchat-operator rbac --namespaced dchat > manifests/overlays/namespaced/rbac.yaml

# All hashed locks (requirements.lock for the dev venv, requirements-{node,operator,plugin}.lock
# for the images and kubectl-dchat), keeping locked versions; LOCK_ARGS=--upgrade or
# LOCK_ARGS="--upgrade-package NAME" moves them. Then the venv follows the new lock.
lock: venv
	scripts/lock.sh $(LOCK_ARGS)
	@scripts/bootstrap.sh venv
