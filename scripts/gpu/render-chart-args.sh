#!/usr/bin/env bash
# Renders the chart's PD values files and writes what the GPU check needs from them into
# scripts/gpu/chart-engines.json (committed: the GPU machine has no helm). Run it after a chart
# change; tests/chart/test_gpu_chart_args.py fails while the committed file is stale.
#   scripts/gpu/render-chart-args.sh [OUT_FILE]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=${1:-$ROOT/scripts/gpu/chart-engines.json}
HELM=${HELM:-$ROOT/.tools/bin/helm}
PY=${PYTHON:-$ROOT/.venv/bin/python}
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
for pair in nixl:values/values-pd.yaml lmcache:values/values-pd-lmcache.yaml; do
  name=${pair%%:*}
  "$HELM" template pdstack "$ROOT/charts/pdstack" -f "$ROOT/${pair#*:}" \
    --set routerSpec.repository=localhost/pdstack-router |
    "$PY" "$ROOT/scripts/gpu/chart_args.py" "$name" >>"$tmp"
done
"$PY" -c 'import json,sys; out={}; [out.update(json.loads(l)) for l in open(sys.argv[1])]; print(json.dumps(out, indent=1, sort_keys=True))' "$tmp" >"$OUT"
echo "wrote $OUT"
