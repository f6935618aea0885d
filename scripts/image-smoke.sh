#!/usr/bin/env bash
# Run the router image against a fake engine on this host and send one request.
#   bash scripts/image-smoke.sh [IMAGE]     (default pdstack/router:<appVersion>)
# The container shares the host network (loopback only), runs as its image user (uid 10001),
# and both processes are stopped on exit.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
VERSION=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' charts/pdstack/Chart.yaml)
IMAGE=${1:-pdstack/router:$VERSION}
STORAGE_DRIVER=${STORAGE_DRIVER:-vfs}
PY=.venv/bin/python
NAME=pdstack-image-smoke-$$

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# Storage of our own under .cache/ (vfs: no overlay mounts needed), so the system's podman
# configuration and images are left alone.
PODMAN=(podman --root "$ROOT/.cache/containers/storage" --runroot "$ROOT/.cache/containers/run"
    --storage-driver "$STORAGE_DRIVER")
pm() { "${PODMAN[@]}" "$@"; }

ENGINE_PORT=$(free_port)
ROUTER_PORT=$(free_port)
ENGINE_LOG=$(mktemp)
"$PY" -m tests.doubles.fake_engine --host 127.0.0.1 --port "$ENGINE_PORT" --model tiny >"$ENGINE_LOG" 2>&1 &
ENGINE_PID=$!
cleanup() {
    pm rm -f "$NAME" >/dev/null 2>&1 || true
    kill "$ENGINE_PID" 2>/dev/null || true
    rm -f "$ENGINE_LOG"
}
trap cleanup EXIT

wait_http() { # URL SECONDS
    for _ in $(seq "$2"); do
        if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
        sleep 1
    done
    return 1
}
wait_http "http://127.0.0.1:$ENGINE_PORT/health" 30 || { cat "$ENGINE_LOG"; exit 1; }

echo "==> running $IMAGE (router on 127.0.0.1:$ROUTER_PORT, fake engine on :$ENGINE_PORT)"
pm run -d --name "$NAME" --network host \
    -e PDSTACK_ROUTER_HOST=127.0.0.1 -e PDSTACK_ROUTER_PORT="$ROUTER_PORT" \
    "$IMAGE" --static-backends "http://127.0.0.1:$ENGINE_PORT" --static-models tiny >/dev/null
if ! wait_http "http://127.0.0.1:$ROUTER_PORT/ready" 60; then
    pm logs "$NAME"
    exit 1
fi
echo "==> container user: $(pm exec "$NAME" id -u)"
echo "==> HEALTHCHECK: $(pm inspect --format '{{json .Config.Healthcheck.Test}}' "$IMAGE")"
pm exec "$NAME" python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['PDSTACK_ROUTER_PORT'] + '/health', timeout=2)" &&
    echo "==> healthcheck command passes inside the container"
echo "==> POST /v1/completions through the container"
curl -fsS "http://127.0.0.1:$ROUTER_PORT/v1/completions" -H 'Content-Type: application/json' \
    -d '{"model": "tiny", "prompt": "hello", "max_tokens": 8}'
echo
echo "==> router log (last lines)"
pm logs "$NAME" 2>&1 | tail -5
echo "==> image size"
pm images --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$IMAGE"
