# pdstack: one entry point for contributors. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.pdstack-installed
PYTEST := $(PY) -m pytest
MODE ?= pd
ROUTER_CORES ?= 4
BENCH_ROUTER_FLAGS ?=

.PHONY: help setup lint test test-unit test-e2e test-faults test-fuzz test-docs chart-test tools engines engines-vllm \
        engines-sim demo \
        bench bench-fake bench-router soak image clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[1m%-13s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): router/pyproject.toml router/constraints.txt
	@echo "==> creating $(VENV) and installing the router with its dev tools (pinned)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -c router/constraints.txt -e 'router[dev]'
	@touch $@

setup: $(STAMP) ## Create .venv with the router and its dev tools (pinned, cached)

lint: $(STAMP) ## ruff (lint + format check) and mypy --strict on the package
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy --config-file router/pyproject.toml

tools: ## Install pinned helm, helm-unittest and kubeconform into .tools/bin
	bash scripts/install-tools.sh

engines: $(STAMP) ## Install the CPU vLLM environment and llm-d's simulator (cached)
	$(MAKE) --no-print-directory -j2 -Oline engines-vllm engines-sim

engines-vllm:
	bash scripts/engines/setup-vllm.sh

engines-sim:
	bash scripts/engines/install-llmd-sim.sh

test: $(STAMP) ## Everything CI runs: lint, unit, integration, faults, chart and e2e tests
	@echo "==> installing test tools and engines in parallel (cached after the first run)"
	$(MAKE) --no-print-directory -j3 -Oline tools engines-vllm engines-sim
	$(MAKE) --no-print-directory lint
	$(PYTEST) -q -p no:cacheprovider

test-unit: $(STAMP) ## Unit and integration tests that need no real engines or helm
	$(PYTEST) -q -m "not e2e and not chart"

test-e2e: $(STAMP) engines ## End-to-end tests with real CPU vLLM engines and the llm-d simulator
	$(PYTEST) -q -m e2e

test-faults: $(STAMP) ## The fault-injection matrix against a real router process
	$(PYTEST) -q -m faults

test-fuzz: $(STAMP) ## Property, fuzz and schemathesis tests of request handling
	$(PYTEST) -q tests/fuzz

test-docs: $(STAMP) tools ## Docs tests (tutorial commands, values excerpts) and the image replay test
	$(PYTEST) -q tests/docs tests/image

chart-test: $(STAMP) tools ## helm lint, helm unittest and kubeconform on every values file
	bash scripts/chart-test.sh

demo: $(STAMP) ## Local PD stack: vLLM prefill + decode + router (MODE=aggregated: one engine)
	MODE=$(MODE) bash scripts/engines/demo.sh

bench: $(STAMP) ## Multi-round QA: BASE_URL=... runs run_pd.sh against it, else PD vs aggregated on local vLLM
	@if [ -n "$${BASE_URL:-}" ]; then \
	  bash benchmarks/multi-round-qa/run_pd.sh $${MODEL:-tiny} $$BASE_URL $${LABEL:-run}; \
	else \
	  $(MAKE) engines && \
	  $(PY) benchmarks/multi-round-qa/local_stack.py --engines vllm --qps 0.5,1,2 --duration 15 \
	    -- --users 8 --rounds 4 --slo-ttft-ms 500 --slo-itl-ms 100; \
	fi

bench-fake: $(STAMP) ## Multi-round QA through the router over fast test engines, PD vs aggregated (~3 min)
	$(PY) benchmarks/multi-round-qa/local_stack.py --qps 2,4,8 --duration 20 \
	  -- --users 16 --rounds 4 --slo-ttft-ms 200 --slo-itl-ms 20

bench-router: $(STAMP) ## Router overhead table, pdstack vs vllm-router (BENCH_ROUTER_FLAGS=--quick)
	$(PY) -m benchmarks.router.bench_router --router-cores $(ROUTER_CORES) $(BENCH_ROUTER_FLAGS)

soak: $(STAMP) ## Long mixed load with injected faults; reports RSS and descriptors
	$(PY) -m benchmarks.soak.soak

image: ## Router image localhost/pdstack-router: hadolint, podman build, a request through it (PUSH_TO=registry/repo pushes it)
	bash scripts/build-image.sh

clean: ## Remove caches, results and the virtual environments
	rm -rf $(VENV) .tools .cache results .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
