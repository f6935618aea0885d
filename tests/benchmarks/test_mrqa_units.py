"""Unit tests of the multi-round QA benchmark's pure parts: workload, stream parsing, stats."""

from __future__ import annotations

import json
import random

import pytest
from mrqa.stats import SloSpec, percentile, summarize_level
from mrqa.stream_client import RequestResult, StreamFailure, _apply_event, _http_failure
from mrqa.workload import UserFactory, WorkloadShape, arrival_gaps

SHAPE = WorkloadShape(
    rounds=3, system_prompt_tokens=50, user_history_tokens=20, question_tokens=5, answer_tokens=8
)


def test_history_grows_with_answers_and_drops_failed_rounds() -> None:
    user = UserFactory(SHAPE, seed=1).new_user()
    first = user.next_messages()
    assert [m["role"] for m in first] == ["system", "user"]
    user.record_round(first, "an answer")
    second = user.next_messages()
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert second[1] == first[1] and second[2]["content"] == "an answer"
    user.record_round(second, None)  # failed: not kept, roles keep alternating
    third = user.next_messages()
    assert [m["role"] for m in third] == ["system", "user", "assistant", "user"]
    user.record_round(third, "x")
    assert user.finished


def test_users_share_the_system_prompt_but_not_their_history() -> None:
    factory = UserFactory(SHAPE, seed=1)
    a, b = factory.new_user().next_messages(), factory.new_user().next_messages()
    assert a[0] == b[0] and len(a[0]["content"].split()) >= 50
    assert a[1] != b[1]
    assert UserFactory(SHAPE, seed=1).new_user().next_messages() == a  # seeded


def test_arrival_gaps_poisson_mean_and_uniform_spacing() -> None:
    gaps = arrival_gaps(4.0, "poisson", random.Random(0))
    poisson = [next(gaps) for _ in range(20000)]
    assert sum(poisson) / len(poisson) == pytest.approx(0.25, rel=0.05)
    uniform = arrival_gaps(4.0, "uniform", random.Random(0))
    assert {next(uniform) for _ in range(5)} == {0.25}


def test_percentile_interpolates_like_numpy() -> None:
    values = [float(v) for v in (7, 1, 3, 9, 5)]
    assert percentile(values, 50) == 5.0
    assert percentile(values, 90) == pytest.approx(8.2)
    assert percentile([], 50) is None


def _event(payload: object) -> str:
    return json.dumps(payload)


def test_stream_events_time_content_and_take_usage() -> None:
    result = RequestResult(launched_at=10.0)
    last = [10.0]
    chunk = {"choices": [{"delta": {"content": " hi"}}]}
    assert not _apply_event(
        result, _event({"choices": [{"delta": {"role": "assistant"}}]}), 10.1, last
    )
    _apply_event(result, _event(chunk), 10.5, last)
    _apply_event(result, _event(chunk), 10.7, last)
    assert result.ttft == pytest.approx(0.5) and result.gaps == [pytest.approx(0.2)]
    assert (result.output_tokens, result.token_source) == (2, "chunks")
    _apply_event(result, _event({"choices": [], "usage": {"completion_tokens": 3}}), 10.8, last)
    assert (result.output_tokens, result.token_source) == (3, "usage")
    assert _apply_event(result, "[DONE]", 10.9, last)
    assert result.answer == " hi hi"


def test_stream_error_events_and_error_bodies_name_a_reason() -> None:
    with pytest.raises(StreamFailure, match="stream_error:kv_transfer_missing"):
        _apply_event(
            RequestResult(0.0), _event({"error": {"code": "kv_transfer_missing"}}), 1.0, [0.0]
        )
    with pytest.raises(StreamFailure, match="bad_chunk"):
        _apply_event(RequestResult(0.0), "{not json", 1.0, [0.0])
    with pytest.raises(StreamFailure, match="bad_chunk"):
        _apply_event(RequestResult(0.0), _event({"choices": ["text"]}), 1.0, [0.0])
    finish_only = {"choices": [{"index": 0, "finish_reason": "stop"}]}
    assert not _apply_event(RequestResult(0.0), _event(finish_only), 1.0, [0.0])
    body = json.dumps({"error": {"message": "m", "code": "prefill_failed"}}).encode()
    failure = _http_failure(502, body, {})
    assert (failure.reason, failure.message) == ("http_502:prefill_failed", "m")
    pd_reason = {"x-pdstack-pd-reason": "timeout"}
    assert _http_failure(503, b"{}", pd_reason).reason == "http_503:timeout"
    numeric_code = json.dumps({"error": {"code": 500}}).encode()
    assert _http_failure(500, numeric_code, {}).reason == "http_500"
    # no JSON body: the message is the start of what the server sent
    assert _http_failure(504, b"upstream timed out", {}).message == "upstream timed out"


def _ok(ttft: float, gaps: list[float], tokens: int) -> RequestResult:
    result = RequestResult(0.0, ok=True, ttft=ttft, gaps=gaps, e2e=ttft + sum(gaps))
    result.usage_completion_tokens = tokens
    return result


def test_level_summary_counts_failures_and_goodput() -> None:
    results = [
        _ok(0.1, [0.01, 0.01], 3),
        _ok(0.5, [0.01], 2),  # TTFT over the SLO
        _ok(0.1, [0.2], 2),  # ITL over the SLO
        RequestResult(0.0, reason="http_503"),
        RequestResult(0.0, reason="http_503"),
        RequestResult(0.0, reason="timeout"),
    ]
    slo = SloSpec(ttft_ms=200, itl_ms=50)
    level = summarize_level(
        2.0, results, wall_s=2.0, launch_window_s=3.0, delayed_launches=0, slo=slo
    )
    assert (level.launched, level.completed, level.failed) == (6, 3, 3)
    assert level.failures == {"http_503": 2, "timeout": 1}
    assert level.good_requests == 1 and level.goodput == 0.5
    assert level.output_tokens == 7 and level.output_tokens_per_s == 3.5
    assert level.launched_qps == 2.0 and level.token_sources == {"usage": 3}
    assert level.ttft_ms["p50"] == pytest.approx(100.0)
