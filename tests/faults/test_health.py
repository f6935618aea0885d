"""Engines leaving and rejoining rotation: failed health checks and the circuit breaker.
Clients keep getting answers from the engines that remain.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.doubles.engine_proc import FakeEngine
from tests.faults.report import MatrixRecorder, MatrixRow
from tests.faults.stack import by_url, call, engine_view, request_body, wait_for
from tests.harness.router_proc import RouterProcess, static_args

pytestmark = pytest.mark.faults
SCRAPE = ["--engine-scrape-interval", "0.3", "--engine-scrape-timeout", "0.3"]
SCRAPE += ["--health-failure-threshold", "2"]
BREAKER = ["--breaker-failure-threshold", "2", "--breaker-cooldown", "1"]
# A failure counts as load for as long as the breaker's cooldown, as with the defaults (10 s).
BREAKER += ["--engine-failure-window", "1"]


class Trio:
    """Two prefill engines and one decode engine."""

    def __init__(self, factory: Any) -> None:
        self.p0, self.p1 = by_url([factory(role="prefill") for _ in range(2)])
        self.d = factory(role="decode")
        args = static_args([self.p0, self.p1, self.d], roles=["prefill", "prefill", "decode"])
        args += ["--routing-logic", "disagg_prefill", "--prefill-timeout", "1"]
        self.router = RouterProcess([*args, *SCRAPE, *BREAKER]).start()

    def reset(self) -> None:
        for engine in (self.p0, self.p1, self.d):
            engine.reset()
        assert wait_for(lambda: self.row(self.p0)["healthy"], 5)
        assert wait_for(lambda: self.row(self.p0)["breaker"] == "closed", 5)

    def row(self, engine: FakeEngine) -> dict[str, Any]:
        return engine_view(self.router)[engine.url]

    def healthy_gauge(self, engine: FakeEngine) -> float:
        name = engine.url.split("://")[1]
        return self.router.metric("pdstack_router_engine_healthy", engine=name)

    def prefills_on(self, engine: FakeEngine) -> int:
        return int(engine.stats()["by_kind"].get("prefill", 0))


@pytest.fixture(scope="module")
def trio(fake_engine_factory_module: Any) -> Iterator[Trio]:
    trio = Trio(fake_engine_factory_module)
    try:
        yield trio
    finally:
        trio.router.stop()


def _ok(trio: Trio, n: int = 3) -> None:
    for _ in range(n):
        ans = call(trio.router.url, request_body(max_tokens=2))
        assert ans.status == 200, ans.body


def test_health_probe_failures_take_an_engine_out_and_bring_it_back(
    trio: Trio, matrix: MatrixRecorder
) -> None:
    # A hanging /metrics no longer counts: tests/faults/test_engine_state.py.
    fault, scenario = "health_fail", "engine flapping (/health fails, then recovers), twice"
    trio.reset()
    for _ in range(2):
        started = time.monotonic()
        trio.p0.set_faults(**{fault: {}})
        assert wait_for(lambda: not trio.row(trio.p0)["healthy"], 5), trio.row(trio.p0)
        out_after = time.monotonic() - started
        assert trio.healthy_gauge(trio.p0) == 0
        before = trio.prefills_on(trio.p0)
        _ok(trio)  # the other prefill engine answers; the sick one gets nothing
        assert trio.prefills_on(trio.p0) == before

        trio.p0.set_faults()
        assert wait_for(lambda: trio.row(trio.p0)["healthy"], 5), trio.row(trio.p0)
        assert trio.healthy_gauge(trio.p0) == 1
        _ok(trio, 4)  # idle again: equally loaded engines take turns, so P0 serves again
        assert trio.prefills_on(trio.p0) >= before + 1
    matrix.add(
        MatrixRow(
            scenario,
            "2P1D",
            "out of rotation after 2 failed probes, back on the first good one; no client error",
            "out, back, all requests 200",
            out_after,
            5.0,
        )
    )


def test_breaker_opens_on_failures_and_closes_after_a_good_trial(
    trio: Trio, matrix: MatrixRecorder
) -> None:
    trio.reset()
    trio.p0.set_faults(http_error={"status": 500})
    # Requests that land on P0 fail there and are retried on P1. A failure counts as load for
    # a second, so P0 gets its next request only after that.
    for _ in range(40):
        _ok(trio, 1)  # ... so the client never sees a failure
        if trio.row(trio.p0)["breaker"] == "open":
            break
    assert trio.row(trio.p0)["breaker"] == "open"
    before = trio.prefills_on(trio.p0)
    _ok(trio, 2)
    assert trio.prefills_on(trio.p0) == before, "an open breaker still got traffic"

    trio.p0.set_faults()
    time.sleep(1.1)  # the cooldown: the next requests on P0 are trials
    assert trio.row(trio.p0)["breaker"] == "half_open"
    _ok(trio, 6)  # equally loaded engines take turns: P0 gets its trials among these
    assert trio.row(trio.p0)["breaker"] == "closed"
    assert trio.prefills_on(trio.p0) >= before + 2
    matrix.add(
        MatrixRow(
            "prefill engine failing repeatedly (breaker)",
            "2P1D",
            "breaker opens after 2 failures; after the 1 s cooldown 2 good trials close it; "
            "no client error",
            "open, half_open, closed; all requests 200",
            0.0,
            0.0,
        )
    )
