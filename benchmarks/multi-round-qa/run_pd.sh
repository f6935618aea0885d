#!/usr/bin/env bash
# Multi-round QA benchmark against an OpenAI-compatible endpoint (a PD stack or any other).
#
#   run_pd.sh MODEL BASE_URL [LABEL] [extra multi_round_qa.py flags...]
#   run_pd.sh tiny http://localhost:30080/v1 stack --qps 0.5,1,2 --duration 30
#
# Results go to results/multi-round-qa/LABEL/ at the repo root (LABEL defaults to "run").
# Options may also come from the environment (flags after the positional args win):
#   NUM_USERS NUM_ROUNDS QPS DURATION REQUESTS SYSTEM_PROMPT USER_HISTORY QUESTION_LEN
#   ANSWER_LEN WARMUP SESSION_HEADER SLO_TTFT_MS SLO_ITL_MS SEED RESULTS_DIR PYTHON
# `multi_round_qa.py --help` lists every flag.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

if [[ $# -lt 2 || $1 == -h || $1 == --help ]]; then
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
MODEL=$1
BASE_URL=$2
shift 2
LABEL=run
if [[ $# -gt 0 && $1 != -* ]]; then
    LABEL=$1
    shift
fi

# The repo's virtualenv when there is one (it has aiohttp), else whatever python3 is on PATH.
if [[ -z ${PYTHON:-} ]]; then
    if [[ -x $ROOT/.venv/bin/python ]]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi

args=(--model "$MODEL" --base-url "$BASE_URL" --label "$LABEL"
      --output-dir "${RESULTS_DIR:-$ROOT/results/multi-round-qa}/$LABEL")
add() { if [[ -n ${!1:-} ]]; then args+=("$2" "${!1}"); fi; }
add NUM_USERS --users
add NUM_ROUNDS --rounds
add QPS --qps
add DURATION --duration
add REQUESTS --requests
add SYSTEM_PROMPT --system-prompt-tokens
add USER_HISTORY --user-history-tokens
add QUESTION_LEN --question-tokens
add ANSWER_LEN --answer-tokens
add WARMUP --warmup-requests
add SESSION_HEADER --session-header
add SLO_TTFT_MS --slo-ttft-ms
add SLO_ITL_MS --slo-itl-ms
add SEED --seed

exec "$PYTHON" "$HERE/multi_round_qa.py" "${args[@]}" "$@"
