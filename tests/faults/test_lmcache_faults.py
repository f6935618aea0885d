"""LMCache native PD: the router waits for the prefiller's "KV ready" notifications (one per TP
rank) on its ZMQ PULL socket. Missing or partial notifications end in a timeout within
--pd-kv-wait-timeout, and the decoder is never asked to read KV that did not arrive.
"""

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
from tests.harness.router_proc import RouterProcess, free_port, static_args

pytestmark = pytest.mark.faults
TP = 2  # two ranks: two notifications per request


@pytest.fixture(scope="module")
def lmcache(
    fake_engine_factory_module: Any,
) -> Iterator[tuple[FakeEngine, FakeEngine, RouterProcess]]:
    proxy_port = free_port()
    # Like an LMCache 0.5.6 PD sender: a request without disagg_spec would kill it.
    p = fake_engine_factory_module(
        role="prefill", tp_size=TP, lmcache_proxy_port=proxy_port, lmcache_pd_role="sender"
    )
    d = fake_engine_factory_module(role="decode", itl_ms=10)
    args = [
        *static_args([p, d], roles=["prefill", "decode"]),
        "--static-lmcache-init-ports",
        ",7300;7301",  # the decoder is the receiver; the fake never binds these
        "--static-lmcache-alloc-ports",
        ",7400;7401",
        "--routing-logic",
        "disagg_prefill",
        "--kv-transport",
        "lmcache",
        "--pd-proxy-host",
        "127.0.0.1",
        "--pd-proxy-port",
        str(proxy_port),
        *DEADLINE_FLAGS,
        # The KV wait runs inside the prefill deadline; a longer prefill deadline lets the
        # KV wait be the one that fires (with equal values the phase reads `prefill`).
        "--prefill-timeout",
        "3",
        "--breaker-failure-threshold",
        "1000",
    ]
    with RouterProcess(args).start() as router:
        yield p, d, router


@pytest.mark.parametrize(
    ("scenario", "faults", "stream", "status"),
    [
        ("LMCache: all notifications", {}, False, 200),
        ("LMCache: all notifications, chat stream", {}, True, 200),
        ("LMCache: no notification", {"lmcache_no_notify": {}}, False, 504),
        ("LMCache: no notification, stream", {"lmcache_no_notify": {}}, True, 504),
        ("LMCache: partial notifications (1 of 2 ranks)",
         {"lmcache_partial_notify": {"ranks": 1}}, False, 504),
    ],
)  # fmt: skip
def test_lmcache_kv_wait(
    lmcache: tuple[FakeEngine, FakeEngine, RouterProcess],
    matrix: MatrixRecorder,
    scenario: str,
    faults: dict[str, Any],
    stream: bool,
    status: int,
) -> None:
    p, d, router = lmcache
    p.reset()
    d.reset()
    p.set_faults(**faults)
    before = router.metrics()
    bound = DEADLINE_S + SLACK_S if status != 200 else SLACK_S
    api = "chat" if stream else "completions"
    ans = call(router.url, request_body(api=api, stream=stream), api=api, timeout=bound + 3)
    expected = "200" if status == 200 else "504 `timeout` phase `kv_transfer`"
    observed = f"{ans.status} {ans.error_code or ''} {ans.headers.get('x-pdstack-pd-phase', '')}"
    matrix.add(MatrixRow(scenario, "lmcache 1P1D", expected, observed.strip(), ans.elapsed, bound))
    assert ans.status == status, ans.body[:300]
    assert ans.elapsed <= bound
    if status == 200:
        assert ans.error_code is None
        if stream:
            assert ans.events[-1] == b"[DONE]"
    else:
        assert ans.json["error"]["code"] == "timeout"
        assert ans.headers["x-pdstack-pd-reason"] == "timeout"
        assert ans.headers["x-pdstack-pd-phase"] == "kv_transfer"
        assert "/v1/completions" not in d.stats()["by_path"], "decode ran without its KV"
    assert wait_for(lambda: in_flight_total(router) == 0, 3)
    assert p.alive, "the LMCache sender died"
    if status != 200:
        after = router.metrics()
        assert metric_delta(before, after, "pdstack_router_errors_total", code="timeout") == 1
