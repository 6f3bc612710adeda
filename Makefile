# llmroute — every target does its own set-up on a fresh machine.
#   make test   lint, types, fresh-checks and every test tier (unit, integration, fuzz, e2e, reliability)
#   make demo   the main job on an embedded local control plane
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pytest exits 5 when a tier has no tests yet; that is a pass, not a failure.
PYTEST = $(BIN)/pytest -p no:cacheprovider
define run_tier
	@echo "==> tests/$(1)"
	@$(PYTEST) tests/$(1) $(PYTEST_ARGS) || { rc=$$?; [ $$rc -eq 5 ] && echo "(no tests in tests/$(1))" || exit $$rc; }
endef

.PHONY: help
help:
	@echo "make demo        run the demo on an embedded local control plane"
	@echo "make test        lint + typecheck + fresh-checks + unit, integration, fuzz, e2e and reliability tests"
	@echo "make test-unit | test-integration | test-fuzz | test-e2e | test-reliability    one tier"
	@echo "make lint | typecheck | proto | crds | docs | check-generated"
	@echo "make controlplane | cluster-up | cluster-down    the local kube-apiserver + etcd"
	@echo "make images | kind-e2e    container images (needs Docker); the kind end-to-end test (needs Docker and kind)"
	@echo "make bench       the sidecar beside the floor and LiteLLM proxy (~10 min; installs LiteLLM in a cached venv); writes docs/bench/ and docs/performance.md"
	@echo "make bench-overhead | bench-overhead-quick | bench-policies | bench-routing | bench-propagation | bench-gc    benchmarks (not part of make test)"
	@echo "make soak        10 minutes of mixed load with 5% upstream faults: p99 drift and RSS growth (not part of make test)"

$(STAMP): pyproject.toml
	@test -x $(PY) || { echo "==> creating $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@echo "==> installing llmroute[dev] into $(VENV) (first time: a few minutes)"
	@$(PY) -m pip install --disable-pip-version-check -q --upgrade pip
	@$(PY) -m pip install --disable-pip-version-check --progress-bar off -q -e '.[dev]'
	@touch $@

.PHONY: venv
venv: $(STAMP)

.PHONY: lint
lint: $(STAMP)
	@echo "==> ruff"
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .

.PHONY: fmt
fmt: $(STAMP)
	@$(BIN)/ruff check --fix .
	@$(BIN)/ruff format .

.PHONY: typecheck
typecheck: $(STAMP)
	@echo "==> mypy (strict)"
	@$(BIN)/mypy

.PHONY: proto
proto: $(STAMP)
	@$(PY) hack/gen_proto.py

.PHONY: crds
crds: $(STAMP)
	@$(PY) hack/gen_crds.py
	@$(PY) hack/gen_reference.py

.PHONY: docs
docs: $(STAMP)
	@$(PY) hack/gen_reference.py

.PHONY: check-generated
check-generated: $(STAMP)
	@echo "==> generated code is fresh"
	@$(PY) hack/gen_proto.py --check
	@$(PY) hack/gen_crds.py --check
	@$(PY) hack/gen_reference.py --check

.PHONY: test-unit
test-unit: $(STAMP)
	$(call run_tier,unit)

.PHONY: system-deps
system-deps:
	@bash hack/ensure-redis.sh
	@bash hack/ensure-promtool.sh

.PHONY: test-integration
test-integration: $(STAMP) system-deps
	$(call run_tier,integration)

.PHONY: test-e2e
test-e2e: $(STAMP) system-deps controlplane
	$(call run_tier,e2e)

.PHONY: test-fuzz
test-fuzz: $(STAMP) system-deps
	$(call run_tier,fuzz)

.PHONY: test-reliability
test-reliability: $(STAMP) system-deps controlplane
	$(call run_tier,reliability)

.PHONY: test
test: lint typecheck check-generated test-unit test-integration test-fuzz test-e2e test-reliability
	@echo "==> all tiers passed"

.PHONY: images
images:
	@bash hack/images.sh

.PHONY: kind-e2e
kind-e2e:
	@bash hack/kind-e2e.sh

.PHONY: controlplane
controlplane: $(STAMP)
	@$(PY) -m llmroute_operator.devcluster.binaries ensure

.PHONY: demo
demo: $(STAMP) system-deps controlplane
	@$(PY) hack/demo.py $(ARGS)

.PHONY: bench
bench: $(STAMP)
	@$(PY) -m bench.peers

.PHONY: bench-overhead
bench-overhead: $(STAMP)
	@$(PY) -m bench.overhead

.PHONY: bench-overhead-quick
bench-overhead-quick: $(STAMP)
	@$(PY) -m bench.overhead --quick

.PHONY: bench-policies
bench-policies: $(STAMP) system-deps
	@$(PY) -m bench.policies

.PHONY: bench-routing
bench-routing: $(STAMP)
	@$(PY) -m bench.routing

.PHONY: bench-propagation
bench-propagation: $(STAMP) controlplane
	@$(PY) -m bench.propagation

.PHONY: soak
soak: $(STAMP)
	@$(PY) -m bench.soak $(ARGS)

.PHONY: bench-gc
bench-gc: $(STAMP)
	@$(PY) -m bench.overhead.gc_probe

.PHONY: cluster-up
cluster-up: $(STAMP)
	@$(PY) -m llmroute_operator.devcluster up

.PHONY: cluster-down
cluster-down: $(STAMP)
	@$(PY) -m llmroute_operator.devcluster down
