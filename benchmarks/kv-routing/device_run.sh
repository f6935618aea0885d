#!/usr/bin/env bash
# The KV-routing benchmark on a many-core machine with no network, in one command: install the
# router benchmark's wheels (benchmarks/router/device_wheels.sh) and this benchmark's bundle
# (device_bundle.sh) into a scratch folder, then run bench_kv.py with 12 cases at once (each
# with a simulated fleet of its own). About 3 minutes on 16 cores, never more than LIMIT_S
# (200) plus the install (~20 s).
#
#   benchmarks/kv-routing/device_run.sh WHEELS_DIR BUNDLE_DIR OUT_DIR [bench_kv.py flags...]
#
# OUT_DIR receives results.json, table.md, log.txt and pip.txt (run logs stay in /tmp). The
# run stops after LIMIT_S seconds (default 200) with the cases finished by then.
set -euo pipefail
cd "$(dirname "$0")/../.."
USAGE="usage: device_run.sh WHEELS_DIR BUNDLE_DIR OUT_DIR"
WHEELS=$(cd "${1:?$USAGE}" && pwd)
BUNDLE=$(cd "${2:?$USAGE}" && pwd)
OUT=${3:?$USAGE}
shift 3
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/pdstack-kv-site}
rm -rf "$SITE"
mkdir -p "$SITE/bin"
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$WHEELS"/*.whl "$BUNDLE"/*.whl > "$OUT/pip.txt" 2>&1 || { cat "$OUT/pip.txt"; exit 1; }
tar -C "$SITE" -xJf "$WHEELS"/vllm_router-*-stripped.tar.xz
xz -dc "$BUNDLE/llm-d-inference-sim.xz" > "$SITE/bin/llm-d-inference-sim"
chmod +x "$SITE/bin/llm-d-inference-sim"
cat > "$SITE/bin/vllm-router" <<EOS
#!/bin/sh
exec "$(command -v "$PY")" -c 'import sys; from vllm_router.launch_router import main; sys.exit(main())' "\$@"
EOS
chmod +x "$SITE/bin/vllm-router"
export PYTHONPATH="$SITE:$PWD/router/src:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PY" -c 'import pdrouter.cli, aiohttp, zmq, msgspec, uvloop, vllm_router_rs' || exit 1
echo "python $("$PY" -V 2>&1), $(nproc) cpus, load $(cut -d' ' -f1-3 /proc/loadavg)" \
    | tee "$OUT/log.txt"
# Bounded: SIGTERM after LIMIT_S stops the fleets; the table then has the cases that finished.
rm -rf /tmp/pdstack-kv-results
rc=0
timeout -k 15 "${LIMIT_S:-200}" "$PY" benchmarks/kv-routing/bench_kv.py \
    --out /tmp/pdstack-kv-results --sim "$SITE/bin/llm-d-inference-sim" \
    --vllm-router "$SITE/bin/vllm-router" --parallel 12 --duration 20 "$@" \
    >> "$OUT/log.txt" 2>&1 || rc=$?
cp /tmp/pdstack-kv-results/results.json /tmp/pdstack-kv-results/table.md "$OUT/" || true
cat "$OUT/table.md" 2>/dev/null || tail -n 40 "$OUT/log.txt"
echo "bench_kv rc=$rc load $(cut -d' ' -f1-3 /proc/loadavg)"
exit "$rc"
