#!/usr/bin/env bash
# Gather what device_run.sh needs on a many-core machine with no network and a CPython 3.12 of
# its own, beyond the router benchmark's wheels (benchmarks/router/device_wheels.sh: the
# router's dependencies and the Rust vllm-router): cp312 manylinux wheels of the benchmark
# client's, config and metrics libraries (pinned to router/constraints.txt) and the llm-d
# simulator binary (xz). About 22 MB.
#
#   benchmarks/kv-routing/device_bundle.sh .kvdevice     # git-ignored
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DEST=${1:?usage: device_bundle.sh DEST}
PY=${PYTHON:-$ROOT/.venv/bin/python}
SIM=$ROOT/.tools/bin/llm-d-inference-sim
mkdir -p "$DEST"
DEST=$(cd "$DEST" && pwd)
[ -x "$SIM" ] || "$ROOT/scripts/engines/install-llmd-sim.sh" >/dev/null

# shellcheck source=benchmarks/router/wheel_helpers.sh
source "$ROOT/benchmarks/router/wheel_helpers.sh"

# The benchmark client (aiohttp) and uvicorn's, config and metrics libraries, in case the
# device image lacks them.
pins=()
for name in aiohttp aiohappyeyeballs aiosignal attrs frozenlist multidict propcache yarl idna \
        pyyaml prometheus_client uvloop click h11; do
    p=$(pin "$name")
    [ -n "$p" ] || { echo "no pin for $name in router/constraints.txt" >&2; exit 1; }
    pins+=("$p")
done
download "$DEST" "${pins[@]}"
[ -s "$DEST/llm-d-inference-sim.xz" ] || xz -9 -T0 -c "$SIM" > "$DEST/llm-d-inference-sim.xz"
du -sh "$DEST"
