#!/usr/bin/env bash
# Builds the offline package payload for the GPU PD check (scripts/gpu/device-stage.sh) on a
# machine WITH network, for a GPU machine WITHOUT network that already has Python 3.12, torch
# 2.11.0+cu130 and the packages in scripts/gpu/device-packages.txt.
#
#   scripts/gpu/build-payload.sh [OUT_DIR]       # default OUT_DIR: <repo>/.gpu (git-ignored)
#
# What it does, each step timed:
#   1. resolves vLLM, LMCache, the router's runtime deps and the openai client for CPython 3.12 on
#      manylinux x86_64 with uv, leaving out every package the GPU machine has and vLLM's heavy
#      optional kernels (flashinfer, tilelang, cutlass-dsl, quack, torchcodec, fastsafetensors);
#   2. downloads those wheels (pip, binary only) plus nixl + nixl-cu13 without their deps;
#   3. installs them into one folder (no bytecode), prunes what a small Llama on Hopper never
#      loads, and checks that every wheel fits cp312 manylinux x86_64 and that every dependency
#      is in the payload or on the GPU machine (scripts/gpu/payload_check.py);
#   4. packs the folder with `tar | xz` into parts of at most PDSTACK_GPU_PART_MIB MiB (58),
#      named pdstack-gpu-payload.tar.xz.partNN, with a manifest (sizes, sha256, versions).
# Downloads are cached under build/gpu-payload (git-ignored); a second run reuses them.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT_DIR=${1:-$ROOT/.gpu}
WORK=${PDSTACK_GPU_BUILD:-$ROOT/build/gpu-payload}
PART_MIB=${PDSTACK_GPU_PART_MIB:-58}
XZ_LEVEL=${PDSTACK_GPU_XZ_LEVEL:-6}

# Pinned versions (see docs/real-engines.md, "On a GPU"): the newest vLLM whose wheel pins
# torch==2.11.0 (the GPU machine's torch), NIXL built for CUDA 13, LMCache built for CUDA 13.
VLLM_VERSION=0.26.0
NIXL_VERSION=1.5.1
LMCACHE_VERSION=0.5.6
UV_VERSION=0.13.8
TVM_FFI_VERSION=0.1.11 # xgrammar needs >= 0.1.11; vLLM pins 0.1.10 for flashinfer, not shipped
PY_VERSION=3.12
# Oldest glibc first: pip prefers tags in this order, so a newer one is taken only when a
# package ships nothing older (llguidance: 2.31). The GPU machine's glibc is printed by the check.
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64
  manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64 manylinux_2_31_x86_64
  manylinux_2_34_x86_64 manylinux_2_35_x86_64)
UV_PLATFORM=x86_64-manylinux_2_35

# Heavy kernels vLLM imports only for other models or features (MLA, video, quantized JIT,
# FlashInfer): none is imported at module level (checked by grepping the 0.26.0 wheel). NIXL comes
# in separately without its deps (its meta package also wants the CUDA 12 build).
LEFT_OUT=(flashinfer-python flashinfer-cubin flashinfer-jit-cache tilelang nvidia-cutlass-dsl
  quack-kernels torchcodec fastsafetensors tokenspeed-mla tokenspeed-triton pynvvideocodec
  nvidia-cudnn-frontend nvidia-cuda-nvcc nvidia-nvvm nvidia-cuda-crt nvidia-cuda-cccl
  fastapi-cli fastapi-cloud-cli nixl nixl-cu12 nixl-cu13 ray)

T0=$(date +%s)
step() { echo "==> [$(($(date +%s) - T0))s] $*"; }

mkdir -p "$WORK/wheels" "$OUT_DIR"
step "tools: uv $UV_VERSION in $WORK/tools"
if [[ ! -x $WORK/tools/bin/uv ]] || [[ $("$WORK/tools/bin/uv" --version) != "uv $UV_VERSION"* ]]; then
  python3 -m venv "$WORK/tools"
  "$WORK/tools/bin/pip" install -q "uv==$UV_VERSION"
fi
UV=$WORK/tools/bin/uv

step "resolve for CPython $PY_VERSION, manylinux x86_64"
req=$WORK/requirements.in
{
  echo "vllm==$VLLM_VERSION"
  echo "lmcache==$LMCACHE_VERSION"
  echo "cryptography" # LMCache's storage backend imports it; not declared by the wheel
  echo "apache-tvm-ffi==$TVM_FFI_VERSION"
  # The router's runtime dependencies and the benchmark/client side, pinned like CI.
  sed -n '/^dependencies = \[/,/^\]/p' "$ROOT/router/pyproject.toml" | grep -o '"[^"]*"' | tr -d '"'
  echo "openai"
} >"$req"
over=$WORK/overrides.txt
{
  echo "apache-tvm-ffi==$TVM_FFI_VERSION"
  # Already on the GPU machine, or not wanted there: a marker that is never true drops them.
  for name in $(grep -v '^#' "$ROOT/scripts/gpu/device-packages.txt" | sed 's/==.*//'); do
    echo "$name; sys_platform == 'never'"
  done
  for name in "${LEFT_OUT[@]}"; do echo "$name; sys_platform == 'never'"; done
} >"$over"
# The router's CI pins win where vLLM accepts them (its constraints file is for Python 3.11).
grep -iE '^(fastapi|starlette|uvicorn|httptools|orjson|pydantic|pydantic-settings|pydantic-core|pyzmq|msgspec|openai|httpx|aiohttp|prometheus-client|pyyaml|uvloop)==' \
  "$ROOT/router/constraints.txt" >"$WORK/constraints.txt" || true
if ! "$UV" pip compile -q "$req" --override "$over" --constraint "$WORK/constraints.txt" \
  --python-version "$PY_VERSION" --python-platform x86_64-manylinux_2_28 --no-header \
  --no-annotate -o "$WORK/resolved.txt" 2>"$WORK/resolve.err"; then
  echo "(the router's pins conflict with vLLM's; resolving without them)"
  "$UV" pip compile -q "$req" --override "$over" --python-version "$PY_VERSION" \
    --python-platform x86_64-manylinux_2_28 --no-header --no-annotate -o "$WORK/resolved.txt"
fi
echo "nixl==$NIXL_VERSION" >>"$WORK/resolved.txt"
echo "nixl-cu13==$NIXL_VERSION" >>"$WORK/resolved.txt"
echo "$(grep -c '==' "$WORK/resolved.txt") packages to bring"

step "download wheels (cached in $WORK/wheels)"
pargs=()
for p in "${PLATFORMS[@]}"; do pargs+=(--platform "$p"); done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" \
  --implementation cp "${pargs[@]}" -d "$WORK/wheels" -r "$WORK/resolved.txt"
# Keep exactly the resolved set (an older download of another version would install twice).
python3 "$ROOT/scripts/gpu/payload_check.py" select "$WORK/resolved.txt" "$WORK/wheels" >"$WORK/selected.txt"

step "install into one folder and prune"
SITE=$WORK/stage/site
rm -rf "$WORK/stage"
mkdir -p "$SITE"
"$UV" pip install -q --no-deps --no-index --no-compile --target "$SITE" \
  --python-version "$PY_VERSION" --python-platform "$UV_PLATFORM" $(cat "$WORK/selected.txt")
before=$(du -sm "$SITE" | cut -f1)
# What a small Llama on Hopper never loads (FA3 serves Hopper; no MoE; no CUTLASS/DeepGEMM JIT
# headers) and NIXL's object-store plugins; the list was tried on the GPU machine (2026-12-01).
rm -f "$SITE"/vllm/vllm_flash_attn/_vllm_fa2_C*.so "$SITE"/vllm/_moe_C*.so
rm -rf "$SITE"/bin/vllm-rs "$SITE"/vllm/vllm-rs "$SITE"/vllm/third_party/cutlass* \
  "$SITE"/deep_gemm/include "$SITE"/vllm/third_party/deep_gemm/include
# nixl_ep is built for torch 2.12-2.14 only (not the machine's 2.11) and PD does not use it;
# LMCache's cuda_ops do not load on torch 2.11 (LMCache falls back to torch ops on ImportError).
rm -f "$SITE"/nixl_ep_cu13/nixl_ep_cpp_torch*.so "$SITE"/lmcache/cuda_ops*.so
find "$SITE" -path '*nixl*' \( -name 'libplugin_OBJ*' -o -name 'libplugin_AZURE*' \
  -o -name 'libplugin_GUSLI*' -o -name 'libplugin_INFINIA*' \) -delete
find "$SITE" -name '__pycache__' -type d -prune -exec rm -rf {} +
echo "installed ${before} MB, pruned to $(du -sm "$SITE" | cut -f1) MB"

step "check wheel tags and dependency closure"
printf '%s\n' "${LEFT_OUT[@]}" >"$WORK/left-out.txt"
python3 "$ROOT/scripts/gpu/payload_check.py" check "$WORK/selected.txt" \
  "$ROOT/scripts/gpu/device-packages.txt" "$WORK/left-out.txt" | tee "$WORK/check.txt"

step "pack: tar | xz -$XZ_LEVEL -T0, parts of $PART_MIB MiB"
rm -f "$OUT_DIR"/pdstack-gpu-payload.tar.xz.part*
{
  echo "vllm=$VLLM_VERSION nixl=$NIXL_VERSION lmcache=$LMCACHE_VERSION python=$PY_VERSION"
  sed 's|.*/||' "$WORK/selected.txt"
} >"$SITE/PAYLOAD-VERSIONS.txt"
tar -C "$WORK/stage" -cf - site | xz "-$XZ_LEVEL" -T0 |
  split -b "${PART_MIB}M" -d -a 2 - "$OUT_DIR/pdstack-gpu-payload.tar.xz.part"
(cd "$OUT_DIR" && sha256sum pdstack-gpu-payload.tar.xz.part* >pdstack-gpu-payload.sha256)
ls -l "$OUT_DIR"/pdstack-gpu-payload.*
step "done: $(ls "$OUT_DIR"/pdstack-gpu-payload.tar.xz.part* | wc -l) parts in $OUT_DIR"
