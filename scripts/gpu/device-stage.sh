#!/usr/bin/env bash
# The GPU PD check on a one-GPU machine, staged over several short sessions without network.
#
#   bash scripts/gpu/device-stage.sh [all|nixl|lmcache]     (default: all)
#
# Each call:
#   1. copies whichever payload parts it finds in <repo>/.gpu/ (pdstack-gpu-payload.tar.xz.partNN
#      and pdstack-gpu-payload.sha256, made by scripts/gpu/build-payload.sh) into a folder that
#      outlives the call, $PDSTACK_GPU_STATE (default /root/pdstack-gpu), checking each part's
#      sha256; while parts are missing it says which and stops;
#   2. once all parts are there: unpacks them (once) into $STATE/site and checks the imports;
#      with PDSTACK_GPU_ONLINE=1 and no parts it pip-installs the same pinned versions instead;
#   3. builds the tiny model (once) and runs scripts/gpu/gpu_pd_check.py for the connectors
#      asked, each time-boxed so the whole call ends within $PDSTACK_GPU_BUDGET_S (540 s); a
#      connector that no longer fits is skipped and named (run `device-stage.sh lmcache` next);
#   4. copies the results of every run so far (at most 8 files, flat) into $OUT (or
#      $STATE/out) and prints a compact summary.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WHAT=${1:-all}
STATE=${PDSTACK_GPU_STATE:-/root/pdstack-gpu}
BUDGET=${PDSTACK_GPU_BUDGET_S:-540}
PY=${PDSTACK_GPU_PYTHON:-python3}
DEST=${OUT:-$STATE/out}
T0=$(date +%s)
RES=$STATE/results
mkdir -p "$STATE/parts" "$RES" "$DEST"
STAGE_LOG=$RES/stage.txt
say() { echo "[stage $(($(date +%s) - T0))s] $*" | tee -a "$STAGE_LOG"; }
left() { echo $((BUDGET - ($(date +%s) - T0))); }

emit() { # results of every call so far into $DEST, then the summary
  for f in check-nixl.json check-lmcache.json bench-nixl.json bench-lmcache.json run_pd.json \
    logs-nixl.txt logs-lmcache.txt stage.txt; do
    [[ -f $RES/$f ]] && cp "$RES/$f" "$DEST/$f"
  done
  "$PY" "$ROOT/scripts/gpu/summary.py" "$RES" 2>&1 | tee -a "$STAGE_LOG"
  cp "$STAGE_LOG" "$DEST/stage.txt"
}

echo "=== $(date -u +%FT%TZ) device-stage.sh $WHAT" >>"$STAGE_LOG"

# 1. parts
for f in "$ROOT"/.gpu/pdstack-gpu-payload.*; do
  [[ -f $f ]] || continue
  cp "$f" "$STATE/parts/" && say "copied $(basename "$f") ($(du -m "$f" | cut -f1) MiB)"
done
SUMS=$STATE/parts/pdstack-gpu-payload.sha256
SITE=$STATE/site
if [[ ! -f $SITE/.unpacked ]]; then
  if [[ -f $SUMS ]]; then
    missing=()
    while read -r sum name; do
      part=$STATE/parts/$name
      if [[ ! -f $part ]]; then
        missing+=("$name")
      elif [[ ! -f $part.ok ]]; then
        if [[ $(sha256sum "$part" | cut -d' ' -f1) == "$sum" ]]; then touch "$part.ok"; else
          say "BAD CHECKSUM: $name (removed; send it again)"
          rm -f "$part"
          missing+=("$name")
        fi
      fi
    done <"$SUMS"
    if ((${#missing[@]})); then
      say "waiting for parts: ${missing[*]} (have: $(cd "$STATE/parts" && ls *.part* 2>/dev/null | grep -v '\.ok$' | tr '\n' ' '))"
      emit
      exit 0
    fi
    say "all parts here: unpacking"
    rm -rf "$STATE/unpack" && mkdir -p "$STATE/unpack"
    if ! cat $(awk '{print "'"$STATE/parts/"'" $2}' "$SUMS") | xz -d -T0 | tar -x -C "$STATE/unpack"; then
      say "unpack failed"
      emit
      exit 1
    fi
    rm -rf "$SITE" && mv "$STATE/unpack/site" "$SITE" && touch "$SITE/.unpacked"
    say "unpacked: $(du -sm "$SITE" | cut -f1) MB"
  elif [[ ${PDSTACK_GPU_ONLINE:-0} == 1 ]]; then
    say "no payload: installing the pinned versions from the package index"
    "$PY" -m pip install -q --target "$SITE" vllm==0.26.0 lmcache==0.5.6 cryptography openai \
      apache-tvm-ffi==0.1.11 "$ROOT/router" &&
      "$PY" -m pip install -q --no-deps --target "$SITE" nixl==1.5.1 nixl-cu13==1.5.1 &&
      touch "$SITE/.unpacked" || { say "online install failed"; emit; exit 1; }
  else
    say "no payload parts in $ROOT/.gpu and no sha256 list yet: send the parts (see docs/real-engines.md)"
    emit
    exit 0
  fi
fi

# 2. environment
export PYTHONPATH=$SITE:$ROOT/router/src${PYTHONPATH:+:$PYTHONPATH}
export HF_HUB_OFFLINE=1 VLLM_USE_FLASHINFER_SAMPLER=0 PYTHONUNBUFFERED=1
{
  echo "machine: $(nvidia-smi -L 2>/dev/null | head -2 | tr '\n' ' ')"
  echo "driver: $(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1)"
  echo "glibc: $(ldd --version 2>/dev/null | head -1)"
  echo "python: $("$PY" -c 'import sys; print(sys.version.split()[0])')"
  cat "$SITE/PAYLOAD-VERSIONS.txt" 2>/dev/null | head -1
} | tee -a "$STAGE_LOG"
if ! "$PY" -c 'import torch, vllm, lmcache, nixl, openai, pdrouter.cli; print("imports ok: torch", torch.__version__, "vllm", vllm.__version__, "cuda", torch.cuda.is_available())' 2>&1 | tail -3 | tee -a "$STAGE_LOG"; then
  say "imports failed"
fi

# 3. model and checks
MODEL=$STATE/tiny-gpu-model
"$PY" "$ROOT/scripts/gpu/gpu_model.py" "$MODEL" 2>&1 | tail -2 | tee -a "$STAGE_LOG"

run_one() { # connector, seconds it needs, extra flags
  local conn=$1 need=$2
  shift 2
  local remaining
  remaining=$(left)
  if ((remaining < need)); then
    say "SKIPPED $conn: ${remaining}s left, it needs ~${need}s; next call: bash scripts/gpu/device-stage.sh $conn"
    return
  fi
  say "running $conn (limit $((remaining - 15))s)"
  rm -rf "$STATE/run-$conn"
  timeout -k 10 $((remaining - 15)) "$PY" "$ROOT/scripts/gpu/gpu_pd_check.py" --connector "$conn" \
    --out "$STATE/run-$conn" --model-dir "$MODEL" "$@" 2>&1 | grep -E '^\s+\[|^==|^   |Error|error' | tail -60
  cp "$STATE/run-$conn/check-$conn.json" "$STATE/run-$conn/bench-$conn.json" "$RES/" 2>/dev/null
  [[ $conn == nixl && -f $STATE/run-$conn/run_pd.json ]] && cp "$STATE/run-$conn/run_pd.json" "$RES/"
  for log in "$STATE/run-$conn"/work-"$conn"/*.log "$STATE/run-$conn"/*.log; do
    [[ -f $log ]] || continue
    echo "===== $(basename "$log") (last 1500 lines)"
    tail -n 1500 "$log"
  done >"$RES/logs-$conn.txt"
  say "$conn done"
}

case $WHAT in
  all)
    run_one nixl 330 --bench-prompts 64 --run-pd 30
    run_one lmcache 200 --bench-prompts 64
    ;;
  nixl) run_one nixl 330 --bench-prompts 64 --run-pd 30 ;;
  lmcache) run_one lmcache 200 --bench-prompts 64 ;;
  *) say "unknown stage $WHAT (all|nixl|lmcache)" ;;
esac
emit
