"""What the GPU PD check accepts, as pure functions over what it measured (unit-tested in
tests/gpu; gpu_pd_check.py calls them). Each one encodes a fact learnt on a GPU (run 1):

- Greedy output: the tiny model has random weights, so its top two next-token log-probs are
  often nearly equal (on its weights in bf16: median gap 0.07 nats, 12% of steps under 0.01,
  5% exact ties, one bf16 step being 0.008 there). Any change in how the same numbers are reduced (a
  prefix read from cache instead of computed, one more token in a prefill, another batch shape)
  can flip such a near-tie, and from there the two greedy answers differ. So the answer through
  the router must equal the decode engine's own up to the first token where they differ, and
  there the router's token must be one the engine itself scored within TIE_NATS of its best.
  Broken KV gives a token the engine would not pick, from the first token on.
- Logs: vLLM logs a traceback at WARNING when an optional module fails to import (nixl_ep on
  torch 2.11); that is start-up noise, not a failure.
- Bench KV hits: prompt blocks the decoder already holds in its own prefix cache are not
  transferred (`vllm bench serve`'s random prompts share some), so transferred plus local hits
  must cover the prompts.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

TIE_NATS = 0.1
FAILURE_LINES = re.compile(
    r"(Traceback|EngineCore encountered a fatal error|LMCache ERROR|"
    r"KV transfer failed|[Ff]ailed to (load|transfer|send|receive)|NIXL_ERR|"
    r"Num failed (transfers|notifications)=[1-9])"
)
# vLLM's optional-import probe (vllm/utils/import_utils.py) logs the import's traceback at WARNING.
OPTIONAL_IMPORT = re.compile(r"WARNING \d\d-\d\d [\d:]+ \[import_utils\.py:\d+\]")

# One generated token of the engine's own answer: its text and the log-probs of its top choices.
Step = tuple[str, dict[str, float]]


def failure_lines(text: str) -> list[str]:
    """Log lines that report a failure, leaving out vLLM's optional-import probe."""
    lines = text.splitlines()
    return [ln for ln in lines if FAILURE_LINES.search(ln) and not OPTIONAL_IMPORT.search(ln)]


def compare_greedy(
    got: str, steps: list[Step], reference: str, tie: float = TIE_NATS
) -> dict[str, Any]:
    """Compare an answer with the engine's own greedy answer (`steps`, with top log-probs).

    ok: equal, or equal up to a token where the answer took an alternative the engine scored
    within `tie` nats of its best. Where the engine's token texts do not spell its answer (a
    token that is part of a UTF-8 character reads as U+FFFD or "bytes:…"), only the first token
    can be aligned, and only it is compared. Without log-probs (fake engines) only equality is ok.
    """
    if got == reference:
        return {"ok": True, "equal": True}
    aligned = bool(steps) and "".join(token for token, _ in steps) == reference
    off = 0
    for k, (token, top) in enumerate(steps if aligned else steps[:1]):
        if got.startswith(token, off):  # an empty token (a special one) aligns trivially
            off += len(token)
            continue
        best = max(top.values(), default=0.0)
        taken = {
            alt: round(best - lp, 5)
            for alt, lp in top.items()
            if alt != token and alt and got.startswith(alt, off)
        }
        near = {alt: gap for alt, gap in taken.items() if gap <= tie}
        return {
            "ok": bool(near),
            "equal": False,
            "diverged_at": k,
            "engine_token": token,
            "router_token_gap_nats": min(taken.values()) if taken else None,
            "why": "near-tie" if near else "router's token is not a near-tie of the engine's",
        }
    if aligned:
        return {"ok": False, "equal": False, "diverged_at": len(steps), "why": "longer answer"}
    return {
        "ok": bool(steps),
        "equal": False,
        "diverged_at": None,
        "why": "token texts do not spell the answer: first token compared only",
    }


def retrieved_covers(retrieved: Iterable[tuple[int, int]], prompt_tokens: Iterable[int]) -> bool:
    """LMCache log: each PD request's prompt was retrieved whole ("Retrieved N out of N")."""
    whole = Counter(got for got, needed in retrieved if got == needed)
    need = Counter(prompt_tokens)
    return bool(need) and all(whole[n] >= c for n, c in need.items())


def bench_hits_expected(prompt_tokens: float, prompts: int, connector: str) -> float:
    """Prompt tokens the decoder must not compute: all of them but LMCache's first tokens (the
    decoder is sent the prompt plus the prefiller's first token, which it computes)."""
    return prompt_tokens - (prompts if connector == "lmcache" else 0)
