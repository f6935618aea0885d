#!/usr/bin/env bash
# Installs LMCache's own Python classes (not its engine integration) next to the CPU vLLM
# environment, so a test can check the router's LMCache PD messages against them:
#   .cache/lmcache-<version>-wire/  (git-ignored; a stamp makes the next run instant)
# LMCache 0.5.6 imports on CPU with the vLLM venv's torch once three small dependencies are
# there; everything else it declares (CUDA, storage backends) is not needed for its message
# classes. Needs scripts/engines/setup-vllm.sh first (its Python and torch).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LMCACHE_VERSION=0.5.6
PINS=("lmcache==$LMCACHE_VERSION" sortedcontainers==2.4.0 aiofile==3.12.3 caio==0.12.10)
TARGET=$ROOT/.cache/lmcache-$LMCACHE_VERSION-wire
STAMP=$TARGET/.pdstack-installed
VENV=${PDSTACK_VLLM_VENV:-$ROOT/.cache/vllm-venv}
if [[ -f $STAMP && $(cat "$STAMP") == "${PINS[*]}" ]]; then
  echo "LMCache classes ready: $TARGET"
  exit 0
fi
[[ -x $VENV/bin/python ]] || { echo "run scripts/engines/setup-vllm.sh first" >&2; exit 1; }
rm -rf "$TARGET.tmp"
"$VENV/bin/python" -m pip install -q --no-deps --only-binary=:all: --target "$TARGET.tmp" "${PINS[@]}"
rm -rf "$TARGET"
mv "$TARGET.tmp" "$TARGET"
echo "${PINS[*]}" >"$STAMP"
echo "LMCache classes ready: $TARGET"
