"""The same engine faults on the aggregated path (one engine does the whole request)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.doubles.engine_proc import FakeEngine
from tests.faults.report import MatrixRecorder, MatrixRow
from tests.faults.stack import (
    DEADLINE_FLAGS,
    DEADLINE_S,
    SLACK_S,
    call,
    in_flight_total,
    metric_delta,
    request_body,
    wait_for,
)
from tests.harness.router_proc import RouterProcess, static_args

pytestmark = pytest.mark.faults

# (scenario, faults, stream, status, error code, deadlines that may pass)
ROWS: list[tuple[str, dict[str, Any], bool, int, str | None, int]] = [
    ("engine 5xx", {"http_error": {"status": 500}}, False, 502, "engine_error", 0),
    ("engine refusing", {"refuse": {}}, False, 502, "engine_unreachable", 0),
    ("engine hanging (past --non-stream-timeout)", {"hang": {}}, False, 504, "timeout", 2),
    ("engine hanging, stream", {"hang": {}}, True, 504, "timeout", 1),
    ("engine invalid JSON body", {"invalid_json": {}}, False, 502, "engine_error", 0),
    ("engine dying mid-stream", {"die_mid_stream": {"after_chunks": 2}}, True, 200,
     "engine_error", 0),
    ("engine truncated stream", {"truncated_stream": {"after_chunks": 2}}, True, 200,
     "truncated_stream", 0),
    ("engine stalling mid-stream", {"stall_mid_stream": {"after_chunks": 2}}, True, 200,
     "timeout", 1),
]  # fmt: skip


@pytest.fixture(scope="module")
def single(fake_engine_factory_module: Any) -> Iterator[tuple[FakeEngine, RouterProcess]]:
    engine = fake_engine_factory_module(itl_ms=20)
    args = [*static_args([engine]), *DEADLINE_FLAGS, "--breaker-failure-threshold", "1000"]
    with RouterProcess(args).start() as router:
        yield engine, router


@pytest.mark.parametrize(("scenario", "faults", "stream", "status", "code", "deadlines"), ROWS)
def test_aggregated_fault(
    single: tuple[FakeEngine, RouterProcess],
    matrix: MatrixRecorder,
    scenario: str,
    faults: dict[str, Any],
    stream: bool,
    status: int,
    code: str | None,
    deadlines: int,
) -> None:
    engine, router = single
    engine.reset()
    engine.set_faults(**faults)
    before = router.metrics()
    bound = deadlines * DEADLINE_S + SLACK_S
    ans = call(router.url, request_body(stream=stream), timeout=bound + 3)
    matrix.add(
        MatrixRow(
            scenario,
            "aggregated",
            f"{status} `{code}`" + (" as final SSE event + [DONE]" if status == 200 else ""),
            f"{ans.status} `{ans.error_code}`",
            ans.elapsed,
            bound,
        )
    )
    assert ans.status == status, ans.body[:300]
    assert ans.error_code == code, ans.body[-300:]
    assert b"127.0.0.1" not in ans.body  # the client's message names no engine address
    if status == 200:
        assert ans.events[-1] == b"[DONE]"
    else:
        assert ans.headers["x-pdstack-retryable"] == "true"
        assert ans.headers["x-should-retry"] == ("false" if status == 504 else "true")
        assert "x-pdstack-pd-reason" not in ans.headers  # not a PD request
    assert ans.elapsed <= bound
    assert wait_for(lambda: in_flight_total(router) == 0, 3)
    after = router.metrics()
    assert metric_delta(before, after, "pdstack_router_errors_total", code=str(code)) == 1
    assert metric_delta(before, after, "pdstack_router_engine_requests_total", outcome="error")


# An engine's own answer passed on: (scenario, faults, stream, status, Retry-After, deadlines).
PASSED_ON: list[tuple[str, dict[str, Any], bool, int, str | None, int]] = [
    ("engine busy (503 with Retry-After)", {"http_error": {"status": 503, "retry_after": 9}},
     False, 503, "9", 0),
    ("engine rate-limited (429 with Retry-After)", {"http_error": {"status": 429,
     "retry_after": 3}}, True, 429, "3", 0),
    ("engine answer slower than --first-byte-timeout, non-stream", {"slow": {"delay_ms": 1500}},
     False, 200, None, 2),
]  # fmt: skip


@pytest.mark.parametrize(("scenario", "faults", "stream", "status", "retry_after", "deadlines"),
                         PASSED_ON)  # fmt: skip
def test_aggregated_engine_answer_passed_on(
    single: tuple[FakeEngine, RouterProcess],
    matrix: MatrixRecorder,
    scenario: str,
    faults: dict[str, Any],
    stream: bool,
    status: int,
    retry_after: str | None,
    deadlines: int,
) -> None:
    engine, router = single
    engine.reset()
    engine.set_faults(**faults)
    bound = deadlines * DEADLINE_S + SLACK_S
    ans = call(router.url, request_body(stream=stream), timeout=bound + 3)
    expected = f"{status}" + (
        f", the engine's body, Retry-After {retry_after}" if retry_after else ""
    )
    observed = f"{ans.status}" + (
        f", {'the engine' if ans.error_code == str(status) else 'our'}'s body, "
        f"Retry-After {ans.headers.get('retry-after')}"
        if ans.status >= 400
        else ""
    )
    matrix.add(MatrixRow(scenario, "aggregated", expected, observed, ans.elapsed, bound))
    assert ans.status == status, ans.body[:300]
    assert ans.elapsed <= bound
    if status >= 400:
        assert ans.error_code == str(status)  # vLLM's code (the status), as the engine sent it
        assert ans.headers["retry-after"] == retry_after
        assert ans.headers["x-pdstack-retryable"] == ans.headers["x-should-retry"] == "true"
    assert wait_for(lambda: in_flight_total(router) == 0, 3)
