#!/usr/bin/env bash
# Gather what device_run.sh needs on a many-core machine with no network and a CPython 3.12 of
# its own: cp312 manylinux wheels of the router's and the benchmark client's dependencies
# (pinned to router/constraints.txt), the Rust vllm-router (its installed files, the extension
# stripped of symbols, as a tar.xz), and the llm-d simulator binary (xz). About 50 MB.
#
#   benchmarks/kv-routing/device_bundle.sh build/kv-device     # build/ is git-ignored
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DEST=${1:?usage: device_bundle.sh DEST}
PY=${PYTHON:-$ROOT/.venv/bin/python}
VLLM_ROUTER=${VLLM_ROUTER_VERSION:-0.1.17}
SIM=$ROOT/.tools/bin/llm-d-inference-sim
mkdir -p "$DEST/wheels"
DEST=$(cd "$DEST" && pwd)
[ -x "$SIM" ] || "$ROOT/scripts/engines/install-llmd-sim.sh" >/dev/null

pin() { grep -i -E "^$1==" "$ROOT/router/constraints.txt" | head -1; }
download() {
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 \
        --platform manylinux1_x86_64 -d "$1" "${@:2}"
}

pins=()
for name in fastapi starlette pydantic pydantic_core annotated-types annotated-doc \
        typing-inspection typing_extensions anyio sniffio opentelemetry-api uvicorn httptools \
        uvloop orjson msgspec pyzmq pyyaml prometheus_client aiohttp aiohappyeyeballs aiosignal \
        attrs frozenlist multidict propcache yarl idna click h11; do
    p=$(pin "$name")
    [ -n "$p" ] || { echo "no pin for $name in router/constraints.txt" >&2; exit 1; }
    pins+=("$p")
done
download "$DEST/wheels" "${pins[@]}" "setproctitle==1.3.8"  # vllm-router imports it

bundle="$DEST/vllm_router-$VLLM_ROUTER-stripped.tar.xz"
if [ ! -s "$bundle" ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    download "$tmp" "vllm-router==$VLLM_ROUTER"
    mkdir "$tmp/site"
    (cd "$tmp/site" && unzip -q "$tmp"/vllm_router-*.whl)
    strip --strip-unneeded "$tmp/site/vllm_router_rs.abi3.so"
    tar -C "$tmp/site" -cf - . | xz -9 -T0 > "$bundle.tmp"
    mv "$bundle.tmp" "$bundle"
fi
[ -s "$DEST/llm-d-inference-sim.xz" ] || xz -9 -T0 -c "$SIM" > "$DEST/llm-d-inference-sim.xz"
du -sh "$DEST"
