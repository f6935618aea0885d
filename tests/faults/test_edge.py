"""The edge: what careless and hostile clients do to the router, and what it does about it.

Slowloris connections, bodies that stop half-way, more concurrent requests than the router
admits, and many large prompts at once. The router is the real process; engines are the fake
engine (a test double).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.doubles.engine_proc import FakeEngine
from tests.faults.report import MatrixRecorder, MatrixRow
from tests.faults.stack import call, open_sockets, request_body, router_pid, rss_bytes, wait_for
from tests.harness.router_proc import RouterProcess, static_args

pytestmark = pytest.mark.faults
MB = 1024 * 1024


@pytest.fixture(scope="module")
def engine(fake_engine_factory_module: Any) -> FakeEngine:
    return fake_engine_factory_module()  # type: ignore[no-any-return]


def _slowloris(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
    return sock


def _closed_by_peer(sock: socket.socket) -> bool:
    """True once the router closed the connection (EOF or reset), whatever it wrote before."""
    sock.setblocking(False)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_slowloris_connections_are_closed_and_others_still_served(
    engine: FakeEngine, matrix: MatrixRecorder
) -> None:
    args = [*static_args([engine]), "--request-header-timeout", "1"]
    with RouterProcess(args).start() as router:
        assert call(router.url, request_body(max_tokens=2)).status == 200  # pool warm
        baseline = open_sockets(router_pid(router))
        started = time.monotonic()
        attackers = [_slowloris(router.port) for _ in range(200)]
        try:
            for _ in range(3):  # one more header byte a second: each byte resets nothing
                time.sleep(0.5)
                for sock in attackers:
                    with contextlib.suppress(OSError):
                        sock.send(b"x")
            served = call(router.url, request_body(max_tokens=2)).status
            all_closed = wait_for(lambda: all(_closed_by_peer(s) for s in attackers), 5, 0.2)
            took = time.monotonic() - started
            closed = sum(_closed_by_peer(s) for s in attackers)
        finally:
            for sock in attackers:
                sock.close()
        settled = wait_for(lambda: open_sockets(router_pid(router)) <= baseline, 5)
        timeouts = router.metric("pdstack_router_rejected_requests_total", reason="header_timeout")
    matrix.add(
        MatrixRow(
            "200 slowloris connections (a header byte every 0.5 s)",
            "aggregated",
            "closed after --request-header-timeout 1; other clients served",
            f"{closed}/200 closed; a normal request got {served}; {timeouts:.0f} counted",
            took,
            1.0 + 1.5 + 3.0,
        )
    )
    assert served == 200
    assert all_closed, f"{closed}/200 closed"
    assert timeouts >= 200
    assert settled


def test_a_body_that_stops_half_way_gets_408(engine: FakeEngine, matrix: MatrixRecorder) -> None:
    args = [*static_args([engine]), "--request-body-timeout", "1"]
    with RouterProcess(args).start() as router:
        body = orjson.dumps(request_body(max_tokens=2))
        sock = socket.create_connection(("127.0.0.1", router.port), timeout=10)
        started = time.monotonic()
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body) + 100}\r\n\r\n".encode()
            + body
        )
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
        took = time.monotonic() - started
        sock.close()
        before = engine.stats()["by_path"].get("/v1/completions", 0)
        assert call(router.url, request_body(max_tokens=2)).status == 200
    head, _, payload = raw.partition(b"\r\n\r\n")
    code = orjson.loads(payload)["error"]["code"] if payload else None
    matrix.add(
        MatrixRow(
            "client stops sending its body half-way",
            "aggregated",
            "408 `body_timeout` after --request-body-timeout 1, connection closed",
            f"{head.split(b' ')[1].decode() if head else 'nothing'} {code}",
            took,
            1.0 + 1.5,
        )
    )
    assert head.startswith(b"HTTP/1.1 408"), raw[:200]
    assert code == "body_timeout"
    assert engine.stats()["by_path"].get("/v1/completions", 0) == before + 1  # only the good one


def _parallel(url: str, bodies: list[dict[str, Any]], timeout: float = 30) -> list[httpx.Response]:
    results: list[httpx.Response] = [None] * len(bodies)  # type: ignore[list-item]

    def one(i: int) -> None:
        with httpx.Client(timeout=timeout) as client:
            results[i] = client.post(url + "/v1/completions", json=bodies[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
        time.sleep(0.05)  # arrive in order
    for t in threads:
        t.join(timeout + 5)
    return results


def test_concurrency_limit_queues_then_answers_429(
    engine: FakeEngine, matrix: MatrixRecorder
) -> None:
    args = [*static_args([engine]), "--max-concurrent-requests", "2"]
    args += ["--max-queued-requests", "2", "--queue-timeout", "1"]
    engine.set_faults(slow={"delay_ms": 2500})
    try:
        with RouterProcess(args).start() as router:
            started = time.monotonic()
            answers = _parallel(router.url, [request_body(max_tokens=2) for _ in range(6)])
            took = time.monotonic() - started
            rejected = router.metric("pdstack_router_rejected_requests_total")
    finally:
        engine.set_faults()
    statuses = [a.status_code for a in answers]
    codes = [a.json()["error"]["code"] for a in answers if a.status_code == 429]
    matrix.add(
        MatrixRow(
            "6 concurrent requests, --max-concurrent-requests 2, queue 2, queue timeout 1 s",
            "aggregated",
            "2 served, 2 queued then 429 `queue_timeout`, 2 at once 429 `queue_full`; Retry-After",
            f"{dict(Counter(statuses))}; {dict(Counter(codes))}",
            took,
            2.5 + 1.5,
        )
    )
    assert statuses.count(200) == 2, statuses
    assert Counter(codes) == {"queue_full": 2, "queue_timeout": 2}, codes
    for a in answers:
        if a.status_code == 429:
            assert a.headers["retry-after"] == "1"
            assert a.json()["error"]["type"] == "rate_limit_error"
    assert rejected == 4


def _peak_rss(pid: int, stop: threading.Event, peak: list[int]) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], rss_bytes(pid))
        time.sleep(0.02)


@pytest.fixture
def big_prompt_stack(fake_engine_factory: Any) -> Iterator[tuple[FakeEngine, FakeEngine]]:
    p = fake_engine_factory(role="prefill", max_model_len=100_000)
    d = fake_engine_factory(role="decode", max_model_len=100_000)
    yield p, d


def test_many_large_prompts_wait_for_the_body_budget(
    big_prompt_stack: tuple[FakeEngine, FakeEngine], matrix: MatrixRecorder
) -> None:
    p, d = big_prompt_stack
    args = [*static_args([p, d], roles=["prefill", "decode"]), "--routing-logic", "disagg_prefill"]
    args += ["--prefill-timeout", "60", "--first-byte-timeout", "60"]  # defaults otherwise
    prompt = ("a" * 999 + " ") * 25_000  # 25 MB in 25k long "tokens"
    bodies = [{"model": "tiny", "prompt": prompt, "max_tokens": 1} for _ in range(8)]
    with RouterProcess(args).start() as router:
        pid = router_pid(router)
        idle = rss_bytes(pid)
        stop, peak = threading.Event(), [0]
        sampler = threading.Thread(target=_peak_rss, args=(pid, stop, peak))
        sampler.start()
        started = time.monotonic()
        try:
            answers = _parallel(router.url, bodies, timeout=120)
        finally:
            stop.set()
            sampler.join()
        took = time.monotonic() - started
    statuses = Counter(a.status_code for a in answers)
    growth = (peak[0] - idle) / MB
    matrix.add(
        MatrixRow(
            "8 concurrent 25 MB prompts (PD), default --max-inflight-body-bytes 64 MiB",
            "1P1D",
            "2 bodies held at once, the rest wait their turn; all 200; RSS peak far below 1 GB",
            f"{dict(statuses)}; RSS {idle / MB:.0f} MB idle, peak +{growth:.0f} MB",
            took,
            0.0,
        )
    )
    assert statuses == {200: 8}, statuses
    assert growth < 400, f"RSS grew {growth:.0f} MB"
