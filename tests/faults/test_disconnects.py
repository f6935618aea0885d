"""A client that hangs up cancels whatever runs on its behalf: prefill, hand-off or decode.

Deadlines are long here (10 s) so that only the client's disconnect can end the engine's work
within the few seconds the test waits.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.doubles.engine_proc import FakeEngine
from tests.faults.report import MatrixRecorder, MatrixRow
from tests.faults.stack import (
    call,
    in_flight_total,
    open_sockets,
    raw_request,
    request_body,
    router_pid,
    wait_for,
)
from tests.harness.router_proc import RouterProcess, static_args

pytestmark = pytest.mark.faults
LONG = "10"


@pytest.fixture(scope="module")
def pair(fake_engine_factory_module: Any) -> Iterator[tuple[FakeEngine, FakeEngine, RouterProcess]]:
    p = fake_engine_factory_module(role="prefill")
    d = fake_engine_factory_module(role="decode", itl_ms=100)
    args = [
        *static_args([p, d], roles=["prefill", "decode"]),
        "--routing-logic",
        "disagg_prefill",
        "--prefill-timeout",
        LONG,
        "--first-byte-timeout",
        LONG,
        "--idle-timeout",
        LONG,
        "--engine-scrape-interval",
        "1",
    ]
    with RouterProcess(args).start() as router:
        yield p, d, router


@pytest.mark.parametrize(
    ("where", "prefill_fault", "decode_fault", "hang_up_after", "cancelled_on"),
    [
        ("during prefill", {"hang": {}}, {}, 0.5, "prefill"),
        ("during hand-off (slow decode start)", {}, {"slow": {"delay_ms": 8000}}, 0.5, "decode"),
        ("during decode", {}, {}, 0.6, "decode"),
    ],
)
def test_client_disconnect_cancels_the_running_leg(
    pair: tuple[FakeEngine, FakeEngine, RouterProcess],
    matrix: MatrixRecorder,
    where: str,
    prefill_fault: dict[str, Any],
    decode_fault: dict[str, Any],
    hang_up_after: float,
    cancelled_on: str,
) -> None:
    p, d, router = pair
    p.reset()
    d.reset()
    # A good request first: the pool then holds its keep-alive connections to both engines.
    assert call(router.url, request_body(max_tokens=2)).status == 200
    p.reset()
    d.reset()
    sockets_before = open_sockets(router_pid(router))
    cancelled_before = router.metric("pdstack_router_requests_total", outcome="cancelled")
    p.set_faults(**prefill_fault)
    d.set_faults(**decode_fault)

    sock = raw_request(router.port, "/v1/completions", request_body(stream=True, max_tokens=200))
    time.sleep(hang_up_after)
    sock.close()
    hung_up = time.monotonic()

    engine = p if cancelled_on == "prefill" else d
    assert wait_for(lambda: engine.stats()["cancelled"] >= 1, 3), engine.stats()
    seen_after = time.monotonic() - hung_up
    matrix.add(
        MatrixRow(
            f"client disconnects {where}",
            "1P1D",
            f"{cancelled_on} engine sees the cancel",
            f"{cancelled_on} engine cancelled ({engine.stats()['cancelled']})",
            seen_after,
            3.0,
        )
    )
    if cancelled_on == "prefill":
        assert d.stats()["by_path"] == {}, "decode started for a client that left"
    assert wait_for(lambda: in_flight_total(router) == 0, 3)
    cancelled = router.metric("pdstack_router_requests_total", outcome="cancelled")
    assert cancelled - cancelled_before == 1
    # The client's socket and the engine connection of the cancelled leg are both gone.
    assert wait_for(lambda: open_sockets(router_pid(router)) <= sockets_before, 5), (
        f"{open_sockets(router_pid(router))} sockets, {sockets_before} before"
    )
