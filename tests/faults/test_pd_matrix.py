"""The PD fault matrix: one table of engine faults, each checked end to end.

A real router (disagg_prefill, NIXL transport) runs over fake engine processes (test doubles)
told to misbehave. Each row asserts what the client gets (status, error code, PD headers or the
final SSE error event), that the answer came within the configured deadlines plus slack, and
the router's state after: nothing left in flight, the failure counted, no leaked sockets.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.doubles.engine_proc import FakeEngine
from tests.faults.pd_scenarios import SCENARIOS, Scenario
from tests.faults.report import MatrixRecorder, MatrixRow
from tests.faults.stack import (
    Answer,
    by_url,
    call,
    engine_view,
    in_flight_total,
    metric_delta,
    open_sockets,
    pd_router_args,
    request_body,
    router_pid,
    wait_for,
)
from tests.harness.router_proc import RouterProcess

pytestmark = pytest.mark.faults


class PdFleet:
    """Two prefill and two decode engines shared by the module, and routers over them."""

    def __init__(self, factory: Any) -> None:
        prefill = by_url([factory(role="prefill") for _ in range(2)])
        decode = by_url([factory(role="decode", itl_ms=20) for _ in range(2)])
        self.slots: dict[str, FakeEngine] = {
            "P0": prefill[0],
            "P1": prefill[1],
            "D0": decode[0],
            "D1": decode[1],
        }
        one = ["--prefill-max-retries", "1", "--decode-max-retries", "1"]
        self.routers = {
            "2p2d": RouterProcess(pd_router_args(prefill, decode, *one)),
            "1p1d": RouterProcess(pd_router_args(prefill[:1], decode[:1], *one)),
            "recompute": RouterProcess(
                pd_router_args(prefill[:1], decode[:1], "--pd-on-missing-kv", "recompute")
            ),
        }
        for router in self.routers.values():
            router.start()
        self.baseline = {name: self._settled_sockets(r) for name, r in self.routers.items()}

    def _settled_sockets(self, router: RouterProcess) -> int:
        """Sockets after one good request (pooled engine connections exist from then on)."""
        assert call(router.url, request_body()).status == 200
        return open_sockets(router_pid(router))

    def reset(self) -> None:
        """Faults off, counters cleared, killed engines back, and every router sees them."""
        for engine in self.slots.values():
            if not engine.alive:
                engine.start()
            engine.reset()
        for router in self.routers.values():
            assert wait_for(lambda r=router: _all_healthy(r), 10), engine_view(router)

    def stop(self) -> None:
        for router in self.routers.values():
            router.stop()


def _all_healthy(router: RouterProcess) -> bool:
    return all(row["healthy"] for row in engine_view(router).values())


@pytest.fixture(scope="module")
def fleet(fake_engine_factory_module: Any) -> Iterator[PdFleet]:
    fleet = PdFleet(fake_engine_factory_module)
    try:
        yield fleet
    finally:
        fleet.stop()


def _check_answer(sc: Scenario, ans: Answer) -> None:
    assert ans.status == sc.status, ans.body[:500]
    if sc.code is not None:
        # Engine addresses are internal: the client's message never names one (logs do).
        assert b"127.0.0.1" not in ans.body, ans.body[-300:]
    if sc.stream and sc.status == 200:
        assert ans.events, "expected an SSE stream"
        assert ans.events[-1] == b"[DONE]", ans.body[-300:]
        assert ans.error_code == sc.code, ans.body[-300:]
        return
    if sc.code is None:
        assert ans.error_code is None, ans.body[:300]
        assert ans.json["choices"], ans.body[:300]
        return
    err = ans.json["error"]
    assert {"message", "type", "code"} <= set(err)
    # The engine's own body keeps its code (vLLM: the HTTP status); ours carries the reason.
    assert err["code"] == (sc.status if sc.engine_body else sc.code)
    assert ans.headers["x-pdstack-pd-reason"] == sc.code
    assert ans.headers["x-pdstack-pd-phase"] == sc.phase
    assert ans.headers["x-pdstack-retryable"] in ("true", "false")
    assert ans.headers.get("retry-after") == (sc.retry_after or ("1" if sc.status == 503 else None))
    # The OpenAI SDKs retry 5xx on their own; not when an engine already spent the time.
    assert ans.headers["x-should-retry"] == ("false" if sc.status == 504 else "true")


@pytest.mark.parametrize(
    "sc",
    [
        pytest.param(s, id=s.id, marks=pytest.mark.xfail(strict=True, reason=s.xfail))
        if s.xfail
        else pytest.param(s, id=s.id)
        for s in SCENARIOS
    ],
)
def test_pd_fault(sc: Scenario, fleet: PdFleet, matrix: MatrixRecorder) -> None:
    fleet.reset()
    router = fleet.routers[sc.router]
    targeted = {*sc.faults, *sc.kill}
    if sc.router == "2p2d" and targeted:
        # Equally loaded engines take turns, so make the healthy peers of each faulty engine
        # report load: the scheduler then tries the faulty one first, and must recover from it.
        # More load than the failures earlier scenarios charged to the faulty one in the last
        # --engine-failure-window (they count as load too).
        busy = {"P": {"vllm:num_requests_waiting": 30}, "D": {"vllm:num_requests_running": 30}}
        for name, engine in fleet.slots.items():
            role = name[0]
            if name not in targeted and any(t[0] == role for t in targeted) and engine.alive:
                engine.admin_config(metrics_override=busy[role])
        time.sleep(1.2)  # one scrape (1 s) sees it
    for slot, faults in sc.faults.items():
        fleet.slots[slot].set_faults(**faults)
    for slot in sc.kill:
        fleet.slots[slot].kill()
    before = router.metrics()

    ans = call(router.url, request_body(stream=sc.stream), timeout=sc.bound + 3)
    code = ans.headers.get("x-pdstack-pd-reason") or ans.error_code or ""
    observed = f"{ans.status} {code}".strip()
    if ans.headers.get("x-pdstack-pd-phase"):
        observed += f" phase `{ans.headers['x-pdstack-pd-phase']}`"
    if sc.engine_body and ans.status >= 400 and ans.json["error"].get("code") == ans.status:
        observed += ", the engine's error body"
    if ans.headers.get("retry-after") and sc.retry_after:
        observed += f", Retry-After {ans.headers['retry-after']}"
    matrix.add(MatrixRow(sc.id, sc.router.upper(), sc.expected, observed, ans.elapsed, sc.bound))
    _check_answer(sc, ans)
    assert ans.elapsed <= sc.bound, f"answered in {ans.elapsed:.2f}s > {sc.bound:.1f}s"

    # The router's state after: nothing in flight, the failure counted, engines untouched.
    assert wait_for(lambda: in_flight_total(router) == 0, 3), engine_view(router)
    after = router.metrics()
    if (sc.code and sc.status != 200) or (sc.stream and sc.code):
        assert metric_delta(before, after, "pdstack_router_errors_total", code=sc.code) >= 1
    for slot in sc.charged:
        engine = fleet.slots[slot].url.split("://")[1]
        delta = metric_delta(
            before, after, "pdstack_router_engine_requests_total", engine=engine, outcome="error"
        )
        assert delta >= 1, f"failure of {slot} not counted"
    if sc.metric is not None:
        name, labels = sc.metric
        assert metric_delta(before, after, name, **labels) >= 1, name
    for slot in sc.untouched:
        if fleet.slots[slot].alive:
            assert fleet.slots[slot].stats()["by_path"] == {}, f"{slot} got a request"


def test_no_leaked_sockets_after_the_matrix(fleet: PdFleet) -> None:
    """After every scenario ran, each router's sockets return to their settled baseline."""
    fleet.reset()
    for name, router in fleet.routers.items():
        pid = router_pid(router)
        # The baseline pool holds one keep-alive connection per engine; at most one more each
        # (opened while another was busy) is pooling, not a leak. A leak grows per fault.
        limit = fleet.baseline[name] + len(fleet.slots)
        settled = wait_for(lambda p=pid, lim=limit: open_sockets(p) <= lim, 5)  # type: ignore[misc]
        assert settled, f"router {name}: {open_sockets(pid)} sockets > {limit}"


def test_prefill_timeout_is_counted_as_an_engine_error(fleet: PdFleet) -> None:
    """A hanging prefill engine's failure shows in its error count, not as a client cancel."""
    fleet.reset()
    router = fleet.routers["2p2d"]
    fleet.slots["P0"].set_faults(hang={})
    fleet.slots["P1"].admin_config(metrics_override={"vllm:num_requests_waiting": 3})
    time.sleep(1.2)  # one scrape sees P1 busier, so P0 is tried first
    before = router.metrics()
    assert call(router.url, request_body()).status == 200  # retried on P1
    engine = fleet.slots["P0"].url.split("://")[1]
    after = router.metrics()
    errors = metric_delta(
        before, after, "pdstack_router_engine_requests_total", engine=engine, outcome="error"
    )
    assert errors == 1
