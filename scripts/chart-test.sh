#!/usr/bin/env bash
# Test the pdstack chart: install the pinned tools, then for the chart and every values file
#   1. helm lint --strict
#   2. helm unittest (suites in charts/pdstack/tests)
#   3. helm template | kubeconform -strict against offline Kubernetes schemas (the shipped values
#      files and the unit-test fixtures)
#   4. actionlint on the GitHub workflows (the release workflow publishes the image and chart)
# Every render names the router image as the tutorials do (localhost/pdstack-router, what
# `make image` builds): the chart requires one until the image is published.
# Exits non-zero on any failure and prints a summary at the end.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
CHART=charts/pdstack
TOOLS="$ROOT/.tools"
BIN="$TOOLS/bin"
# Kept in step with scripts/install-tools.sh (K8S_SCHEMA_VERSION).
K8S_VERSION=1.33.0
SCHEMA_LOCATION="$TOOLS/k8s-schemas/v$K8S_VERSION-strict/{{ .ResourceKind }}{{ .KindSuffix }}.json"
# CRDs have no schema in the offline set; they are skipped by kind (listed in the summary).
SKIP_KINDS=ServiceMonitor,ScaledObject
ROUTER_IMAGE=(--set routerSpec.repository=localhost/pdstack-router)

"$ROOT/scripts/install-tools.sh" || { echo "chart-test: tool install failed"; exit 1; }

export HELM_PLUGINS="$TOOLS/helm/plugins"
export HELM_DATA_HOME="$TOOLS/helm/data"
export HELM_CONFIG_HOME="$TOOLS/helm/config"
export HELM_CACHE_HOME="$TOOLS/helm/cache"
HELM="$BIN/helm"

failures=()
checks=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# Run one check quietly; print its output only when it fails.
check() {
  local name=$1
  shift
  checks=$((checks + 1))
  if "$@" >"$log" 2>&1; then
    printf 'ok    %s\n' "$name"
  else
    printf 'FAIL  %s\n' "$name"
    sed 's/^/      /' "$log"
    failures+=("$name")
  fi
}

render() {
  # Render as an install would into a cluster that has the Prometheus Operator, with every
  # optional object on, so the ServiceMonitor and NetworkPolicy paths are rendered too.
  "$HELM" template vllm "$CHART" -f "$1" --kube-version "$K8S_VERSION" "${ROUTER_IMAGE[@]}" \
    --api-versions monitoring.coreos.com/v1 --set networkPolicy.enabled=true
}

conform() {
  local rendered
  rendered=$(render "$1") || return 1
  printf '%s\n' "$rendered" | "$BIN/kubeconform" -strict -summary -kubernetes-version "$K8S_VERSION" \
    -schema-location "$SCHEMA_LOCATION" -skip "$SKIP_KINDS"
}

values_files=(values/*.yaml)
fixture_files=("$CHART"/tests/values/*.yaml)

echo "== helm lint --strict"
check "lint chart defaults" "$HELM" lint --strict "$CHART" --kube-version "$K8S_VERSION" "${ROUTER_IMAGE[@]}"
for f in "${values_files[@]}"; do
  check "lint $f" "$HELM" lint --strict "$CHART" -f "$f" --kube-version "$K8S_VERSION" "${ROUTER_IMAGE[@]}"
done

echo "== helm unittest"
unittest_out=$(mktemp)
checks=$((checks + 1))
if "$HELM" unittest --color=false "$CHART" >"$unittest_out" 2>&1; then
  echo "ok    helm unittest $CHART"
else
  echo "FAIL  helm unittest $CHART"
  failures+=("helm unittest")
fi
grep -E '^(### Chart| FAIL|Charts:|Test Suites:|Tests:)' "$unittest_out" | sed 's/^/      /'
if [[ " ${failures[*]-} " == *"helm unittest"* ]]; then sed 's/^/      /' "$unittest_out"; fi
suites=$(sed -n 's/^Test Suites: *\(.*\)$/\1/p' "$unittest_out")
cases=$(sed -n 's/^Tests: *\(.*\)$/\1/p' "$unittest_out")
rm -f "$unittest_out"

echo "== kubeconform -strict (Kubernetes $K8S_VERSION, skipping $SKIP_KINDS)"
for f in "${values_files[@]}" "${fixture_files[@]}"; do
  check "kubeconform $f" conform "$f"
  grep '^Summary' "$log" | sed 's/^/      /'
done

echo "== actionlint"
workflows=(.github/workflows/*.yaml)
check "actionlint ${workflows[*]}" "$BIN/actionlint" "${workflows[@]}"

echo
echo "chart-test summary:"
echo "  helm $("$HELM" version --template '{{.Version}}'), helm-unittest $("$HELM" plugin list | awk '$1 == "unittest" {print $2}'), kubeconform $("$BIN/kubeconform" -v), actionlint $("$BIN/actionlint" -version | head -1)"
echo "  unittest suites: ${suites:-?}"
echo "  unittest cases:  ${cases:-?}"
echo "  values files:    ${#values_files[@]} (lint + kubeconform each), fixtures: ${#fixture_files[@]} (kubeconform)"
passed=$((checks - ${#failures[@]}))
echo "$passed passed, ${#failures[@]} failed"
if ((${#failures[@]})); then
  printf '  failed: %s\n' "${failures[@]}"
  exit 1
fi
