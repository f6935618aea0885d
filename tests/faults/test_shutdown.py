"""Graceful shutdown: SIGTERM while streams run. /ready fails first, the router keeps serving
for the drain delay, short streams finish, long ones end with an SSE error event and [DONE]."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest

from tests.faults.report import MatrixRecorder, MatrixRow
from tests.faults.stack import Answer, call, request_body, wait_for
from tests.harness.router_proc import RouterProcess, static_args

pytestmark = pytest.mark.faults
DRAIN, GRACE = 2.0, 2.0


def _stream(url: str, tokens: int, out: dict[str, Any], key: str) -> None:
    try:
        out[key] = call(url, request_body(stream=True, max_tokens=tokens), timeout=30)
    except Exception as exc:  # a broken connection is a result the test must see
        out[key] = exc


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_drains_then_ends_long_streams_cleanly(
    fake_engine_factory: Any, matrix: MatrixRecorder, workers: int
) -> None:
    engine = fake_engine_factory(itl_ms=100)
    args = [*static_args([engine]), "--workers", str(workers)]
    args += ["--drain-delay", str(DRAIN), "--shutdown-grace-period", str(GRACE)]
    router = RouterProcess(args).start(timeout=120)
    assert router.proc is not None
    try:
        results: dict[str, Any] = {}
        threads = [
            threading.Thread(target=_stream, args=(router.url, 15, results, "short")),
            threading.Thread(target=_stream, args=(router.url, 150, results, "long")),
        ]
        for t in threads:
            t.start()
        time.sleep(0.5)  # both streams run
        signalled = time.monotonic()
        os.kill(router.proc.pid, signal.SIGTERM)
        # With --workers N the supervisor passes the signal on within half a second.
        wait_for(lambda: router.get("/ready")[0] == 503, DRAIN - 0.5, 0.05)
        ready_status = router.get("/ready")[0]
        during_drain = call(router.url, request_body(max_tokens=2)).status
        for t in threads:
            t.join(30)
        long_ended = time.monotonic() - signalled
        router.proc.wait(15)
        exited = time.monotonic() - signalled
    finally:
        router.stop()
    short, long = results["short"], results["long"]
    assert isinstance(short, Answer) and isinstance(long, Answer), results
    matrix.add(
        MatrixRow(
            f"SIGTERM with a 1.5 s and a 15 s stream running (--workers {workers})",
            "aggregated",
            f"/ready 503 at once; served for --drain-delay {DRAIN:g}; short stream completes; "
            f"long one ends with `shutting_down` + [DONE] after --shutdown-grace-period {GRACE:g}",
            f"/ready {ready_status}, new request {during_drain}; short {short.status} "
            f"{short.error_code or 'ok'}; long {long.status} {long.error_code}; exited after "
            f"{exited:.1f}s",
            long_ended,
            DRAIN + GRACE + 2.0,
        )
    )
    assert ready_status == 503
    assert during_drain == 200
    assert short.status == 200 and short.error_code is None and short.events[-1] == b"[DONE]"
    assert long.status == 200 and long.error_code == "shutting_down", long.events[-3:]
    assert long.events[-1] == b"[DONE]"
    assert len(long.events) > 20  # it streamed until the cut
    assert long_ended < DRAIN + GRACE + 2.0
