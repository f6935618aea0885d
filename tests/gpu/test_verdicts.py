"""What the GPU PD check accepts (scripts/gpu/verdicts.py), on what GPU run 1 produced and on
the broken cases each verdict must still catch."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "gpu"))
from verdicts import (  # noqa: E402
    TIE_NATS,
    bench_hits_expected,
    compare_greedy,
    failure_lines,
    retrieved_covers,
)

# Lines from GPU run 1's engine logs: vLLM probing the optional nixl_ep module at start-up.
PID = "(APIServer pid=758) "
PROBE = "\n".join(
    [
        PID + "WARNING 12-01 19:09:35 [import_utils.py:408] Module nixl_ep was found but failed "
        "to import",
        PID + "WARNING 12-01 19:09:35 [import_utils.py:408] Traceback (most recent call last):",
        PID + "WARNING 12-01 19:09:35 [import_utils.py:408] ModuleNotFoundError: No module named "
        "'nixl_ep_cu13.nixl_ep_cpp_torch211'",
        "WARNING 12-01 19:10:55 [import_utils.py:408] Traceback (most recent call last):",
        PID + "INFO 12-01 19:10:31 [loggers.py:310] Engine 000: Prefix cache hit rate: 49.3%",
    ]
)


def test_the_optional_import_probe_is_not_a_failure() -> None:
    assert failure_lines(PROBE) == []


def test_real_failures_are_still_found() -> None:
    bad = [
        "ERROR 12-01 19:10:03 [core.py:900] Traceback (most recent call last):",
        "Traceback (most recent call last):",
        "(EngineCore pid=975) EngineCore encountered a fatal error.",
        "[2026-12-01 19:13:11,328] LMCache ERROR: batched_submit_put_task failed",
        "(EngineCore pid=975) WARNING 12-01 19:10:03 [nixl_connector.py:1] Num failed transfers=2",
    ]
    assert failure_lines(PROBE + "\n" + "\n".join(bad)) == bad


# The engine's own greedy answer, token by token, with its top log-probs at each step.
STEPS = [
    (" cache", {" cache": -7.40, " block": -7.402, " token": -7.55}),
    (" router", {" router": -7.31, " stream": -7.45}),
    (" batch", {" batch": -7.60, " queue": -7.61}),
]
REFERENCE = " cache router batch"


def test_equal_answers_pass() -> None:
    assert compare_greedy(REFERENCE, STEPS, REFERENCE) == {"ok": True, "equal": True}


def test_a_near_tie_flip_passes_and_says_where() -> None:
    # The first token flipped to the engine's near-equal second choice; then the paths differ.
    v = compare_greedy(" block engine layer", STEPS, REFERENCE)
    assert v["ok"] and v["diverged_at"] == 0 and v["router_token_gap_nats"] <= TIE_NATS
    v = compare_greedy(" cache router queue", STEPS, REFERENCE)
    assert v["ok"] and v["diverged_at"] == 2


def test_a_token_the_engine_would_not_pick_fails() -> None:
    # What broken KV gives: a first token that is no near-tie of the engine's (or not in its top).
    v = compare_greedy(" token router batch", STEPS, REFERENCE)
    assert not v["ok"] and v["diverged_at"] == 0 and v["router_token_gap_nats"] > TIE_NATS
    v = compare_greedy(" memory memory memory", STEPS, REFERENCE)
    assert not v["ok"] and v["router_token_gap_nats"] is None
    v = compare_greedy(" cache stream batch", STEPS, REFERENCE)  # gap 0.14 at token 1
    assert not v["ok"] and v["diverged_at"] == 1


def test_unspellable_token_texts_compare_the_first_token_only() -> None:
    # A token that is part of a UTF-8 character reads as U+FFFD: the texts cannot be aligned
    # past it, so only the first token is judged.
    steps = [*STEPS[:1], ("\ufffd", {"\ufffd": -7.0}), (" x", {" x": -7.1})]
    reference = " cache\u00e9 x"
    v = compare_greedy(" cache router", steps, reference)
    assert v["ok"] and v["diverged_at"] is None
    assert compare_greedy(" block router", steps, reference)["ok"]  # a near-tie first token
    assert not compare_greedy(" token router", steps, reference)["ok"]
    assert not compare_greedy(" memory", steps, reference)["ok"]


def test_without_log_probs_only_equality_passes() -> None:
    assert compare_greedy("a", [], "a")["ok"]
    assert not compare_greedy("a", [], "b")["ok"]


def test_lmcache_retrieval_must_cover_each_pd_prompt() -> None:
    # GPU run 1 (decoder without skip_last_n_tokens): whole 256-token chunks only, plus the
    # decoder's own reference requests retrieving short prompts.
    run1 = [(99, 99), (256, 256), (768, 768), (1792, 1792), (100, 100), (768, 768), (103, 103)]
    assert not retrieved_covers(run1, [99, 327, 843, 1803, 100, 844, 103])
    fixed = [(99, 99), (327, 327), (843, 843), (1803, 1803), (100, 100), (844, 844), (103, 103)]
    assert retrieved_covers(fixed, [99, 327, 843, 1803, 100, 844, 103])
    assert not retrieved_covers(fixed, [99, 99])  # one retrieval per request
    assert not retrieved_covers([(300, 327)], [327])  # a partial retrieval
    assert not retrieved_covers([], [])


def test_bench_hits_leave_out_lmcache_first_tokens() -> None:
    assert bench_hits_expected(32781, 64, "nixl") == 32781
    assert bench_hits_expected(32845, 64, "lmcache") == 32781
