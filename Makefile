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

.PHONY: help setup lint test test-unit test-e2e test-faults test-fuzz test-docs test-tracing test-cluster \
        chart-test tools engines engines-vllm engines-sim collector cluster-build cluster-up cluster-down demo \
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

collector: ## Build the OpenTelemetry Collector the tracing tests send spans to (cached)
	bash scripts/install-otelcol.sh

test: $(STAMP) ## Everything CI runs: lint, unit, integration, faults, chart, cluster and e2e tests
	@echo "==> installing test tools, engines, the collector and the control plane in parallel (cached after the first run)"
	$(MAKE) --no-print-directory -j5 -Oline tools engines-vllm engines-sim collector cluster-build
	$(MAKE) --no-print-directory lint
	$(PYTEST) -q -p no:cacheprovider

test-unit: $(STAMP) ## Unit and integration tests that need no real engines, helm or collector
	$(PYTEST) -q -m "not e2e and not chart and not tracing"

test-e2e: $(STAMP) engines collector ## End-to-end tests with real CPU vLLM engines and the llm-d simulator
	$(PYTEST) -q -m e2e

test-faults: $(STAMP) ## The fault-injection matrix against a real router process
	$(PYTEST) -q -m faults

test-tracing: $(STAMP) collector ## Tracing through a real router and OpenTelemetry Collector
	$(PYTEST) -q -m "tracing and not e2e"

test-fuzz: $(STAMP) ## Property, fuzz and schemathesis tests of request handling
	$(PYTEST) -q tests/fuzz

test-docs: $(STAMP) tools ## Docs tests (tutorial commands, values excerpts) and the image replay test
	$(PYTEST) -q tests/docs tests/image

test-cluster: $(STAMP) tools engines cluster-build ## helm install for real: control plane + kwok nodes + pod runner
	$(PYTEST) -q -m cluster

cluster-build: ## Build the pinned control plane (etcd, kube-*, kubectl, kwok) once, cached outside the clone
	bash scripts/k8s/build.sh >/dev/null

CLUSTER := .cluster
cluster-up: $(STAMP) ## Start the control plane (2 kwok nodes) in .cluster/ and the pod runner
	bash scripts/k8s/cluster.sh up $(CLUSTER)
	@if ! kill -0 "$$(cat $(CLUSTER)/podrunner.pid 2>/dev/null)" 2>/dev/null; then \
	  setsid $(PY) -m tests.cluster.podrunner --kubeconfig $(CLUSTER)/kubeconfig \
	    --state $(CLUSTER)/runner >$(CLUSTER)/podrunner.log 2>&1 </dev/null & echo $$! >$(CLUSTER)/podrunner.pid; fi
	@echo 'pods run through the pod runner (log: $(CLUSTER)/podrunner.log); to use the cluster:'
	@echo '  eval "$$(scripts/k8s/cluster.sh env $(CLUSTER))"'

cluster-down: ## Stop the pod runner (and every pod process) and the control plane started by cluster-up
	@pid=$$(cat $(CLUSTER)/podrunner.pid 2>/dev/null); if [ -n "$$pid" ] && kill -0 $$pid 2>/dev/null; then \
	  kill -TERM $$pid; while kill -0 $$pid 2>/dev/null; do sleep 0.2; done; fi; rm -f $(CLUSTER)/podrunner.pid
	bash scripts/k8s/cluster.sh down $(CLUSTER)

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

bench-router: $(STAMP) ## Router overhead table, pdstack vs vllm-router (BENCH_ROUTER_FLAGS=--quick, --tracing)
	$(PY) -m benchmarks.router.bench_router --router-cores $(ROUTER_CORES) $(BENCH_ROUTER_FLAGS)

soak: $(STAMP) ## Long mixed load with injected faults; reports RSS and descriptors
	$(PY) -m benchmarks.soak.soak

image: ## Router image localhost/pdstack-router: hadolint, podman build, a request through it (PUSH_TO=registry/repo pushes it)
	bash scripts/build-image.sh

clean: ## Remove caches, results and the virtual environments
	rm -rf $(VENV) .tools .cache results .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
