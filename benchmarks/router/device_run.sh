#!/usr/bin/env bash
# The whole router benchmark table on a many-core machine with no network, in one command:
# install the carried wheels (benchmarks/router/device_wheels.sh made them) into a scratch
# folder, then run bench_router (1- and 4-core scenarios, pdstack and the Rust vllm-router in
# the same run) with a py-spy flame graph of pdstack in the realistic and PD tiny 1-core runs.
#
#   benchmarks/router/device_run.sh WHEELS_DIR OUT_DIR [bench_router flags...]
#
# OUT_DIR receives at most 7 files: bench-router-*.md and .json, two profile SVGs, the log,
# pip's output and the versions the router ran on. About 6 minutes on 16 cores. `--tracing`
# runs pdstack twice more (tracing on: every request, 10 % sampled), which would double that;
# to stay near 6 minutes, measure the cost of tracing alone, without the Rust router and on
# fewer scenarios:
#   benchmarks/router/device_run.sh WHEELS_DIR OUT_DIR --tracing --no-peers \
#       --scenarios plain-tiny,realistic,pd-tiny,pd-realistic
set -euo pipefail
cd "$(dirname "$0")/../.."
WHEELS=$(cd "${1:?usage: device_run.sh WHEELS_DIR OUT_DIR}" && pwd)
OUT=${2:?usage: device_run.sh WHEELS_DIR OUT_DIR}
shift 2
mkdir -p "$OUT"
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/pdstack-bench-site}
rm -rf "$SITE"
mkdir -p "$SITE/bin"
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$WHEELS"/*.whl > "$OUT/pip.txt" 2>&1 || { cat "$OUT/pip.txt"; exit 1; }
tar -C "$SITE" -xJf "$WHEELS"/vllm_router-*-stripped.tar.xz
# The wheel's console script, which a tar of its files does not bring.
cat > "$SITE/bin/vllm-router" <<EOF
#!/bin/sh
exec "$(command -v "$PY")" -c 'import sys; from vllm_router.launch_router import main; sys.exit(main())' "\$@"
EOF
chmod +x "$SITE/bin/vllm-router"
# The OpenTelemetry Collector for --tracing (device_wheels.sh packed it).
if [ -s "$WHEELS/otelcol-pdstack.xz" ]; then
    xz -dc "$WHEELS/otelcol-pdstack.xz" > "$SITE/bin/otelcol-pdstack"
    chmod +x "$SITE/bin/otelcol-pdstack"
    export PDSTACK_OTELCOL="$SITE/bin/otelcol-pdstack"
fi
export PYTHONPATH="$SITE:$PWD/router/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export VLLM_ROUTER_BIN="$SITE/bin/vllm-router" PYTHONUNBUFFERED=1
"$PY" -c 'import pdrouter.cli, fastapi, uvicorn, httptools, uvloop, orjson, vllm_router_rs' \
    || exit 1
if [[ " $* " == *" --tracing "* ]]; then
    "$PY" -c 'import opentelemetry.sdk.trace, opentelemetry.exporter.otlp.proto.grpc.trace_exporter' \
        || exit 1
    "${PDSTACK_OTELCOL:?--tracing needs otelcol-pdstack.xz in WHEELS_DIR (device_wheels.sh)}" --version || exit 1
fi
echo "python $("$PY" -V 2>&1), $(nproc) cpus, load $(cut -d' ' -f1-3 /proc/loadavg)"
# What the router runs on here, and from where (the carried wheels, or the machine's own).
"$PY" - <<'PYEOF' | tee "$OUT/versions.txt"
import importlib, importlib.metadata as md
for mod, dist in [("uvicorn", "uvicorn"), ("uvloop", "uvloop"), ("httptools", "httptools"),
                  ("fastapi", "fastapi"), ("starlette", "starlette"), ("pydantic", "pydantic"),
                  ("prometheus_client", "prometheus_client"), ("orjson", "orjson"),
                  ("aiohttp", "aiohttp"), ("zmq", "pyzmq"), ("msgspec", "msgspec")]:
    m = importlib.import_module(mod)
    print(f"{dist} {md.version(dist)} {m.__file__}")
PYEOF
"$PY" -m benchmarks.router.bench_router --out "$OUT" --profile realistic,pd-tiny \
    --py-spy "$SITE/bin/py-spy" "$@" 2>&1 | tee "$OUT/log.txt"
