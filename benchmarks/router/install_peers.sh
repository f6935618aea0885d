#!/usr/bin/env bash
# Install the optional comparison router for the router overhead benchmark into its own venv
# under .cache/ (never into the project's .venv): the Rust `vllm-router` from PyPI, pinned.
#
# production-stack's router is not installed: it is not on PyPI under a name of its own (PyPI's
# `vllm-router` is the Rust router) and it needs Python >= 3.12 plus its git tree.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VENV="$ROOT/.cache/bench-router/vllm-router-venv"
VERSION="${VLLM_ROUTER_VERSION:-0.1.17}"
PYTHON="${PYTHON:-python3}"

if [ -x "$VENV/bin/vllm-router" ] && "$VENV/bin/pip" show vllm-router 2>/dev/null \
        | grep -x "Version: $VERSION" >/dev/null; then
    echo "vllm-router $VERSION already installed in $VENV"
    exit 0
fi
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q "vllm-router==$VERSION"
echo "installed vllm-router $VERSION in $VENV"
