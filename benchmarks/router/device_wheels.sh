#!/usr/bin/env bash
# Gather what benchmarks/router/device_run.sh needs on a machine with no network and a CPython
# 3.12 of its own: cp312 manylinux wheels of the router's dependencies that such a machine may
# lack, py-spy, and the Rust vllm-router. Pinned to router/constraints.txt. For `--tracing`: the
# OpenTelemetry SDK and OTLP/gRPC exporter wheels, and the collector (scripts/install-otelcol.sh,
# xz-compressed: 9 MB).
#
#   benchmarks/router/device_wheels.sh DEST      # e.g. .devwheels (git-ignored)
#
# The vllm-router wheel is 24 MB (one 62 MB extension); it goes along as a tar.xz of its
# installed files with the extension stripped of its symbol tables (14 MB), to keep the folder
# small enough to travel. Re-running keeps what is already there.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DEST=${1:?usage: device_wheels.sh DEST}
PY=${PYTHON:-$ROOT/.venv/bin/python}
VLLM_ROUTER=${VLLM_ROUTER_VERSION:-0.1.17}
PY_SPY=0.4.3
SETPROCTITLE=1.3.8
mkdir -p "$DEST"
DEST=$(cd "$DEST" && pwd)

# shellcheck source=benchmarks/router/wheel_helpers.sh
source "$ROOT/benchmarks/router/wheel_helpers.sh"

# Every package the router imports (and their own needs), at the pins it is tested with, so that
# nothing in the figures depends on what the device image happens to carry (its uvloop and
# prometheus_client, for instance).
pins=()
for name in fastapi starlette pydantic pydantic_core annotated-types annotated-doc \
        typing-inspection typing_extensions anyio sniffio opentelemetry-api uvicorn httptools orjson \
        msgspec pyzmq uvloop prometheus_client click h11 PyYAML aiohttp aiohappyeyeballs \
        aiosignal attrs frozenlist multidict propcache yarl idna opentelemetry-sdk opentelemetry-semantic-conventions \
        opentelemetry-exporter-otlp-proto-grpc opentelemetry-exporter-otlp-proto-common \
        opentelemetry-exporter-otlp-common opentelemetry-proto protobuf googleapis-common-protos \
        grpcio; do
    p=$(pin "$name")
    [ -n "$p" ] || { echo "no pin for $name in router/constraints.txt" >&2; exit 1; }
    pins+=("$p")
done
download "$DEST" "${pins[@]}" "py-spy==$PY_SPY" "setproctitle==$SETPROCTITLE"

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
if [ ! -s "$DEST/otelcol-pdstack.xz" ]; then
    collector=$(bash "$ROOT/scripts/install-otelcol.sh")
    xz -6 -T0 -c "$collector" > "$DEST/otelcol-pdstack.xz.tmp"
    mv "$DEST/otelcol-pdstack.xz.tmp" "$DEST/otelcol-pdstack.xz"
fi
ls -la "$DEST"
du -sh "$DEST"
