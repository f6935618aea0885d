#!/usr/bin/env bash
# Run the router image against a fake engine on this host and send one request.
#   bash scripts/image-smoke.sh [IMAGE]     (default localhost/pdstack-router:<appVersion>)
# The container shares the host network (loopback only) and runs as the image's user (10001).
# `podman run` first; where the OCI runtime may not set rlimits (some sandboxes), the image's
# ENTRYPOINT is run with `buildah run --isolation chroot` on a working container instead.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
VERSION=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' charts/pdstack/Chart.yaml)
IMAGE=${1:-localhost/pdstack-router:$VERSION}
STORAGE_DRIVER=${STORAGE_DRIVER:-vfs}
PY=.venv/bin/python
NAME=pdstack-image-smoke-$$
STORE=(--root "$ROOT/.cache/containers/storage" --runroot "$ROOT/.cache/containers/run"
    --storage-driver "$STORAGE_DRIVER")
pm() { podman "${STORE[@]}" "$@"; }
ba() { buildah "${STORE[@]}" "$@"; }

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

ENGINE_PORT=$(free_port)
ROUTER_PORT=$(free_port)
LOG_DIR=$(mktemp -d)
"$PY" -m tests.doubles.fake_engine --host 127.0.0.1 --port "$ENGINE_PORT" --model tiny \
    >"$LOG_DIR/engine.log" 2>&1 &
ENGINE_PID=$!
RUN_PID=""
MODE=""
cleanup() {
    if [ "$MODE" = podman ]; then pm rm -f "$NAME" >/dev/null 2>&1 || true; fi
    if [ -n "$RUN_PID" ]; then kill -- "-$RUN_PID" 2>/dev/null || true; fi
    if [ "$MODE" = buildah ]; then ba rm "$NAME" >/dev/null 2>&1 || true; fi
    kill "$ENGINE_PID" 2>/dev/null || true
    rm -rf "$LOG_DIR"
}
trap cleanup EXIT

wait_http() { # URL SECONDS
    for _ in $(seq "$2"); do
        if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
        sleep 1
    done
    return 1
}
wait_http "http://127.0.0.1:$ENGINE_PORT/health" 30 || { cat "$LOG_DIR/engine.log"; exit 1; }

ENV=(-e PDSTACK_ROUTER_HOST=127.0.0.1 -e PDSTACK_ROUTER_PORT="$ROUTER_PORT")
ARGS=(--static-backends "http://127.0.0.1:$ENGINE_PORT" --static-models tiny)
HEALTH=$(pm image inspect --format '{{json .Config.Healthcheck.Test}}' "$IMAGE")
echo "==> HEALTHCHECK of $IMAGE: $HEALTH"

echo "==> podman run $IMAGE (router on 127.0.0.1:$ROUTER_PORT, fake engine on :$ENGINE_PORT)"
if pm run -d --name "$NAME" --network host "${ENV[@]}" "$IMAGE" "${ARGS[@]}" \
    >"$LOG_DIR/run.out" 2>&1; then
    MODE=podman
    logs() { pm logs "$NAME" 2>&1; }
    in_container() { pm exec "${ENV[@]}" "$NAME" "$@"; }
else
    echo "    podman run failed: $(grep -m1 '^Error' "$LOG_DIR/run.out" || tail -1 "$LOG_DIR/run.out")"
    echo "==> buildah run --isolation chroot (the image's ENTRYPOINT, user and environment)"
    pm rm -f "$NAME" >/dev/null 2>&1 || true # created, never started
    MODE=buildah
    ba from --pull-never --name "$NAME" "$IMAGE" >/dev/null
    mapfile -t ENTRY < <(pm image inspect --format '{{range .Config.Entrypoint}}{{println .}}{{end}}' "$IMAGE" | sed '/^$/d')
    setsid buildah "${STORE[@]}" run --isolation chroot --network host "${ENV[@]}" "$NAME" -- \
        "${ENTRY[@]}" "${ARGS[@]}" >"$LOG_DIR/router.log" 2>&1 &
    RUN_PID=$!
    logs() { cat "$LOG_DIR/router.log"; }
    in_container() { ba run --isolation chroot --network host "${ENV[@]}" "$NAME" -- "$@"; }
fi
if ! wait_http "http://127.0.0.1:$ROUTER_PORT/ready" 90; then
    logs
    exit 1
fi
echo "==> user inside the container: $(in_container id -u)"
# The HEALTHCHECK's own command (["CMD", "python", "-c", ...]), run inside the container.
mapfile -t CHECK < <("$PY" -c 'import json, sys; [print(a) for a in json.loads(sys.argv[1])[1:]]' "$HEALTH")
in_container "${CHECK[@]}" && echo "==> HEALTHCHECK command passes inside the container"
echo "==> POST /v1/completions through the container"
curl -fsS "http://127.0.0.1:$ROUTER_PORT/v1/completions" -H 'Content-Type: application/json' \
    -d '{"model": "tiny", "prompt": "hello", "max_tokens": 8}'
echo
echo "==> router log (last lines)"
logs | tail -4
echo "==> image size"
pm images --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$IMAGE"
