#!/usr/bin/env bash
# `make demo`: real vLLM CPU engines behind the pdstack router, until Ctrl-C.
#   MODE=pd (default)  prefill + decode engines over NIXL, router in disagg_prefill mode
#   MODE=aggregated    one engine, router in roundrobin mode
#   PDSTACK_DEMO_PORT  router port (default 8000, or a free one when 8000 is taken)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=$ROOT/.venv/bin/python
if [ ! -x "$ROOT/.venv/bin/pdstack-router" ]; then
    echo "The router is not installed in $ROOT/.venv: run 'make setup' first." >&2
    exit 1
fi
exec "$PY" "$ROOT/scripts/engines/demo.py" --mode "${MODE:-pd}"
