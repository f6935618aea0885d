"""Standalone experiment: what the HTTP server, client and framework cost a streaming relay.

    python -m benchmarks.router.relay_experiment                 # all variants, ~1 minute

Each variant is a minimal proxy (no routing logic, no metrics) that relays a streamed
completion from fake engines, run as its own process pinned to the router core and loaded
exactly like the router in bench_router. The difference between variants is the price of a
library choice; the gap between the best variant and pdstack-router is the router's own logic.

Variants:
  asgi-aiohttp       uvicorn (httptools, uvloop) + raw ASGI app + aiohttp client
  fastapi-aiohttp    the same endpoint mounted as a route of a FastAPI app (its middleware stack)
  asgi-aiohttp-watch asgi-aiohttp plus one disconnect-watcher task per request
  asgi-raw           uvicorn + raw ASGI app + a minimal asyncio-protocol HTTP/1.1 client
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast
from urllib.parse import urlsplit

VARIANTS = ("asgi-aiohttp", "fastapi-aiohttp", "asgi-aiohttp-watch", "asgi-raw")
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
_SSE = [(b"content-type", b"text/event-stream")]


class RawStream(asyncio.Protocol):
    """One keep-alive upstream connection whose chunked body is handed out piece by piece."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.in_body = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.queue.put_nowait(None)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.in_body:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            del self.buf[: end + 4]  # the experiment's engines always answer 200 chunked
            self.in_body = True
        out = bytearray()
        while True:
            eol = self.buf.find(b"\r\n")
            if eol < 0:
                break
            size = int(bytes(self.buf[:eol]), 16)
            if size == 0:
                del self.buf[: eol + 4]
                if out:
                    self.queue.put_nowait(bytes(out))
                self.queue.put_nowait(None)
                self.in_body = False
                return
            if len(self.buf) < eol + 4 + size:
                break
            out += self.buf[eol + 2 : eol + 2 + size]
            del self.buf[: eol + 4 + size]
        if out:
            self.queue.put_nowait(bytes(out))


class RawPool:
    """Idle connections per upstream; a request takes one and gives it back at the end."""

    def __init__(self) -> None:
        self.idle: dict[tuple[str, int], list[RawStream]] = {}

    async def stream(self, url: str, path: str, body: bytes) -> AsyncIterator[bytes]:
        parts = urlsplit(url)
        key = (parts.hostname or "127.0.0.1", parts.port or 80)
        idle = self.idle.setdefault(key, [])
        conn = idle.pop() if idle else None
        if conn is None or conn.closed:
            _, conn = await asyncio.get_running_loop().create_connection(RawStream, *key)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {key[0]}:{key[1]}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        assert conn.transport is not None
        conn.transport.write(head.encode() + body)
        while True:
            piece = await conn.queue.get()
            if piece is None:
                break
            yield piece
        if not conn.closed:
            idle.append(conn)


def build_app(variant: str, upstreams: list[str]) -> Any:
    """The ASGI app for one variant."""
    import aiohttp

    turn = itertools.cycle(upstreams)
    session: list[aiohttp.ClientSession] = []
    raw = RawPool()

    async def relay(scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        watcher = None
        if variant == "asgi-aiohttp-watch":
            watcher = asyncio.get_running_loop().create_task(receive())
        url = next(turn)
        await send({"type": "http.response.start", "status": 200, "headers": _SSE})
        if variant == "asgi-raw":
            async for piece in raw.stream(url, scope["path"], body):
                await send({"type": "http.response.body", "body": piece, "more_body": True})
        else:
            if not session:
                session.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)))
            headers = {"content-type": "application/json"}
            async with session[0].post(url + scope["path"], data=body, headers=headers) as resp:
                async for piece in resp.content.iter_any():
                    await send({"type": "http.response.body", "body": piece, "more_body": True})
        if watcher is not None:
            watcher.cancel()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["path"] in ("/ready", "/health"):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        await relay(scope, receive, send)

    if variant != "fastapi-aiohttp":
        return app
    from fastapi import FastAPI
    from starlette.routing import Route

    class Endpoint:  # an instance, not a function: Starlette then calls it as an ASGI app
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            await relay(scope, receive, send)

    api = FastAPI()
    api.router.routes.append(Route("/v1/completions", Endpoint(), methods=["POST"]))

    @api.get("/ready")
    async def ready() -> str:
        return "ok"

    return api


def serve(variant: str, port: int, upstreams: list[str]) -> None:
    import uvicorn

    uvicorn.run(
        build_app(variant, upstreams),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="on",
    )


def compare(seconds: float, repeat: int) -> None:
    """Every variant against the same fake engines, interleaved `repeat` times (a busy machine
    drifts); prints CPU per 1,000 requests of each run and the median per variant."""
    from benchmarks.router.phase import PhaseSpec, run_phase
    from benchmarks.router.procstat import parse_cpus
    from benchmarks.router.targets import EnginePool, RouterProc, RouterSpec

    pool = EnginePool(2, parse_cpus("1"))
    runs: dict[str, list[float]] = {v: [] for v in VARIANTS}
    try:
        for variant in VARIANTS * repeat:
            argv = [sys.executable, "-m", "benchmarks.router.relay_experiment", "serve"]
            argv += ["--variant", variant, "--port", "{port}", "--upstream", ",".join(pool.urls())]
            proxy = RouterProc(RouterSpec(variant, "plain", argv), [0])
            try:
                proxy.wait_ready()
                spec = PhaseSpec("saturation", 32, 16, 0, 0, 1.0, seconds)
                watch = {"proxy": [proxy.pid]}
                res = run_phase(spec, [proxy.url], [1], 1, watch)
                per_1k = 1000 * res.cpu_s["proxy"] / max(res.completed_total, 1)
                runs[variant].append(per_1k)
                print(
                    f"{variant:<20} {res.rps:6.0f} req/s  {per_1k:6.3f} CPU s/1k req "
                    f"(= {1000 / per_1k:5.0f} req/s per busy core)  errors {res.errors}",
                    flush=True,
                )
            finally:
                proxy.stop()
    finally:
        pool.stop()
    for variant, values in runs.items():
        if values:
            mid = statistics.median(values)
            print(f"median {variant:<20} {mid:6.3f} CPU s/1k req (= {1000 / mid:5.0f} req/s/core)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("command", nargs="?", default="compare", choices=["compare", "serve"])
    ap.add_argument("--variant", choices=VARIANTS, default="asgi-aiohttp")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--upstream", default="")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if args.command == "serve":
        serve(args.variant, args.port, args.upstream.split(","))
    else:
        compare(args.seconds, args.repeat)


if __name__ == "__main__":
    main()
