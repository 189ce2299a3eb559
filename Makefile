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

.PHONY: help deps venv patroni chain cluster cluster-down check lint typecheck imports test test-unit \
        test-integration test-e2e test-real-node up down crds rbac lock monitoring

help:
	@echo "make up     bring up the local cluster, install dchat, apply a sample DchatCluster"
	@echo "make test   install what is missing, run checks, unit, integration and e2e tests"
	@echo "make check  ruff, ruff format --check, mypy --strict, import-linter, hadolint"
	@echo "make down   stop the operator and the local cluster"

deps:
	@scripts/bootstrap.sh deps

venv:
	@scripts/bootstrap.sh venv

# Patroni (requirements-patroni.lock) in its own venv outside the repo, for the failover
# harness (tests/harness/patroni.py); a no-op when the lock has not changed.
patroni: venv
	@scripts/bootstrap.sh patroni >/dev/null

# The EVM test toolchain (anvil, solc-js from npm by contracts/package-lock.json) in a cache
# outside the repo, and contracts/*.sol compiled into ABI + bytecode artifacts
# (tests/harness/chain.py loads them); a no-op when neither the lock nor a source changed.
chain:
	@scripts/bootstrap.sh chain >/dev/null

# Builds the control-plane binaries if not cached and starts the local cluster, unless
# KUBECONFIG names a reachable cluster (then nothing is built).
cluster: deps
	@tests/cluster/up.sh

cluster-down:
	@tests/cluster/down.sh

lint: venv
	$(VENV)/bin/ruff check operator node tests bench devtools
	$(VENV)/bin/ruff format --check operator node tests bench devtools

typecheck: venv
	$(VENV)/bin/mypy

imports: venv
	$(VENV)/bin/lint-imports

check: lint typecheck imports
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" scripts/lint-dockerfiles.sh

test-unit: venv
	$(PYTEST) -m unit

test-integration: deps venv chain
	$(PYTEST) -m integration

test-e2e: cluster venv patroni
	$(PYTEST) -m e2e

# The real-node tier alone: the project's images on a real kubelet (tests/cluster/realnode.sh).
test-real-node: cluster venv
	@tests/cluster/real-node-status.sh
	$(PYTEST) -m real_node

# Three parts, arranged for a 2-core machine: (1) integration + e2e tests that only share
# the cluster, on TEST_WORKERS parallel workers (much of their time is waiting for pods,
# rollouts and minute boundaries; each real-node module stays on one worker, xdist_group);
# (2) the `serial` ones alone (apiserver frozen 30 s, cluster-wide CRDs, a CPU-saturating
# stress test), with (3) `make check` and the unit tests running beside them (they use no
# cluster, and fill the CPU the freeze leaves idle). Every part runs even if one failed;
# their output and exit codes are printed. DCHAT_TEST_KUBECONFIG hands the cluster the
# `cluster` target brought up to every worker (none runs up.sh again, so none rebuilds an
# image in the middle of a run).
test: deps venv patroni chain cluster
	@start=$$SECONDS; \
	tests/cluster/real-node-status.sh; \
	export DCHAT_TEST_KUBECONFIG="$$(tests/cluster/up.sh 2>/dev/null | sed -n 's/^export KUBECONFIG=//p' | tail -1)"; \
	e2e_rc=0; $(PYTEST) -m "(integration or e2e) and not serial" -n $(TEST_WORKERS) --dist loadgroup || e2e_rc=$$?; \
	side_log=$$(mktemp); \
	{ check_rc=0; $(MAKE) --no-print-directory check || check_rc=$$?; \
	  unit_rc=0; $(PYTEST) -m unit || unit_rc=$$?; \
	  echo "side: check exit $$check_rc, unit exit $$unit_rc"; \
	  exit $$((check_rc || unit_rc)); } >"$$side_log" 2>&1 & side_pid=$$!; \
	serial_rc=0; $(PYTEST) -m "(integration or e2e) and serial" || serial_rc=$$?; \
	side_rc=0; wait $$side_pid || side_rc=$$?; \
	cat "$$side_log"; rm -f "$$side_log"; \
	if ((e2e_rc || serial_rc || side_rc)); then \
	  echo "make test: FAILED (parallel integration+e2e exit $$e2e_rc, serial e2e exit $$serial_rc, check+unit exit $$side_rc) after $$((SECONDS - start)) s"; exit 1; fi; \
	echo "make test: all green in $$((SECONDS - start)) s"

up: deps venv
	@scripts/up.sh

down:
	@scripts/up.sh --down

crds: venv
	$(VENV)/bin/dchat-operator crd > crds/dchat.dev_dchatclusters.yaml
	$(VENV)/bin/dchat-operator crd --kind DchatBackup > crds/dchat.dev_dchatbackups.yaml
	$(VENV)/bin/dchat-operator crd --kind DchatRestore > crds/dchat.dev_dchatrestores.yaml

# manifests/monitoring/ (rule file, scrape example, Grafana dashboards + ConfigMaps) from the
# operator's rule builder and devtools/monitoring; a unit test fails when they are stale.
monitoring: venv
	$(PY) -m devtools.monitoring

rbac: venv
	$(VENV)/bin/dchat-operator rbac > manifests/base/rbac.yaml
	$(VENV)/bin/dchat-operator rbac --namespaced dchat > manifests/overlays/namespaced/rbac.yaml
	$(VENV)/bin/dchat-operator rbac --postgres > manifests/base/rbac-postgres.yaml

# All hashed locks (requirements.lock for the dev venv, requirements-{node,operator,plugin}.lock
# for the images and kubectl-dchat), keeping locked versions; LOCK_ARGS=--upgrade or
# LOCK_ARGS="--upgrade-package NAME" moves them. Then the venv follows the new lock.
lock: venv
	scripts/lock.sh $(LOCK_ARGS)
	@scripts/bootstrap.sh venv
