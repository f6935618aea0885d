"""A client that stops reading holds back the engine, not the router's memory (backpressure).

The engine writes a ~60 MB stream at once; the client reads its headers, then nothing for a few
seconds, then everything. While it stalls, the router may hold what the sockets' buffers hold
plus a read or two, not the stream: its resident memory must stay far below the stream's size,
and the client must still get every event and the final [DONE].
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from tests.doubles.engine_proc import FakeEngine
from tests.faults.stack import in_flight_total, router_pid, rss_bytes, wait_for
from tests.harness.router_proc import RouterProcess, static_args

pytestmark = pytest.mark.faults
TOKENS = 300_000  # about 200 bytes of SSE each
STALL_S = 3.0
BOUND = 16 * 2**20  # a sixth of what an unbounded relay would hold here


@pytest.fixture(scope="module")
def stack(fake_engine_factory_module: Any) -> Iterator[tuple[FakeEngine, RouterProcess]]:
    engine = fake_engine_factory_module(coalesce_chunks=True, max_model_len=TOKENS + 1024)
    args = [*static_args([engine]), "--idle-timeout", "60", "--first-byte-timeout", "60"]
    with RouterProcess(args).start() as router:
        yield engine, router


def _request(port: int, body: dict[str, Any]) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)  # before connect: no scaling
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    data = orjson.dumps(body)
    head = (
        f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode()
    sock.sendall(head + data)
    return sock


@pytest.mark.timeout(120)
def test_a_stalled_reader_leaves_the_stream_in_the_engine(
    stack: tuple[FakeEngine, RouterProcess],
) -> None:
    _, router = stack
    pid = router_pid(router)
    before = rss_bytes(pid)
    body = {"model": "tiny", "prompt": "hi", "max_tokens": TOKENS, "stream": True}
    sock = _request(router.port, {**body, "ignore_eos": True})
    try:
        first = sock.recv(4096)
        assert first.startswith(b"HTTP/1.1 200"), first[:200]
        time.sleep(STALL_S)  # the engine has written everything by now; we read nothing
        stalled = rss_bytes(pid)
        received = bytearray(first)
        while not received.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(1 << 20)
            assert chunk, "the router closed the stream early"
            received += chunk
    finally:
        sock.close()
    assert stalled - before < BOUND, f"router grew by {(stalled - before) / 2**20:.0f} MiB"
    events = _dechunk(bytes(received)).split(b"\n\n")
    assert sum(1 for e in events if e.startswith(b'data: {"id"')) == TOKENS
    assert events[-2:] == [b"data: [DONE]", b""]


def _dechunk(response: bytes) -> bytes:
    """The body of a chunked HTTP/1.1 response."""
    pos = response.index(b"\r\n\r\n") + 4
    parts = []
    while True:
        eol = response.index(b"\r\n", pos)
        size = int(response[pos:eol], 16)
        if size == 0:
            return b"".join(parts)
        parts.append(response[eol + 2 : eol + 2 + size])
        pos = eol + 2 + size + 2


@pytest.mark.timeout(60)
def test_a_stalled_reader_that_hangs_up_cancels_the_engine_request(
    stack: tuple[FakeEngine, RouterProcess],
) -> None:
    engine, router = stack
    engine.reset()
    cancelled_before = router.metric("pdstack_router_requests_total", outcome="cancelled")
    body = {"model": "tiny", "prompt": "hi", "max_tokens": TOKENS, "stream": True}
    sock = _request(router.port, {**body, "ignore_eos": True})
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    time.sleep(1.0)  # the relay now waits on the client's full socket
    sock.close()
    assert wait_for(lambda: engine.stats()["cancelled"] >= 1, 5), engine.stats()
    assert wait_for(lambda: in_flight_total(router) == 0, 5)
    cancelled = router.metric("pdstack_router_requests_total", outcome="cancelled")
    assert cancelled - cancelled_before == 1
