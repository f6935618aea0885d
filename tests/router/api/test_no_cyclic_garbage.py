"""A request leaves no reference cycles behind, so the cycle collector has nothing to chase and
never pauses every stream for a full pass (a watcher task cancelled at the end of each request
used to leave its CancelledError, traceback, coroutines and uvicorn's cycle in one: about 22
objects a request). The app runs in this process under uvicorn with the CLI's HTTP protocol,
over a fake engine process (test double), so the garbage can be inspected."""

from __future__ import annotations

import gc
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from pdrouter.api.app import create_app
from pdrouter.config import load_settings

from tests.doubles.fixtures import make_fake_engine_fixture
from tests.harness.router_proc import free_port, static_args

pytestmark = pytest.mark.slow
engines_module = make_fake_engine_fixture("module")


@pytest.fixture(scope="module")
def router_url(engines_module: Any) -> Iterator[str]:
    engine = engines_module(models=["tiny"], itl_ms=2)
    settings = load_settings([*static_args([engine]), "--engine-scrape-interval", "60"])
    port = free_port()
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="pdrouter.api.http_protocol:DeadlineHttpProtocol",
        lifespan="on",
        log_config=None,
        access_log=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "router did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def _stream(client: httpx.Client, url: str, max_tokens: int) -> bytes:
    body = {"model": "tiny", "prompt": "hello there", "max_tokens": max_tokens, "stream": True}
    with client.stream("POST", url + "/v1/completions", json=body) as resp:
        assert resp.status_code == 200
        return b"".join(resp.iter_bytes())


def _hang_up_mid_stream(url: str) -> None:
    host, port = url.removeprefix("http://").split(":")
    body = b'{"model": "tiny", "prompt": "hi", "max_tokens": 500, "stream": true}'
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%b" % (len(body), body)
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")


def _router_garbage(run: Any) -> list[str]:
    """Type names of router/server objects that only the cycle collector could free, made
    while `run()` ran."""
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        run()
        time.sleep(0.5)  # the server's side of the last requests ends in its own thread
        gc.collect()
        return sorted(
            {
                f"{type(o).__module__}.{type(o).__qualname__}"
                for o in gc.garbage
                if type(o).__module__.startswith(("pdrouter", "uvicorn", "asyncio"))
                or type(o).__name__ in ("Task", "Future", "coroutine")
            }
        )
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def test_streamed_requests_leave_no_cycles(router_url: str) -> None:
    def run() -> None:
        with httpx.Client(timeout=10) as client:
            for _ in range(20):
                assert b"data: [DONE]" in _stream(client, router_url, 8)

    garbage = _router_garbage(run)
    assert garbage == [], garbage


def test_a_client_that_hangs_up_leaves_no_cycles(router_url: str) -> None:
    def run() -> None:
        for _ in range(5):
            _hang_up_mid_stream(router_url)
        time.sleep(0.5)  # the router notices, cancels the engine call and ends the request

    garbage = _router_garbage(run)
    assert garbage == [], garbage
