"""Closed-loop load generator for streamed completions on raw asyncio sockets.

    python -m benchmarks.router.loadgen --url http://127.0.0.1:8000 --concurrency 32 \
        --max-tokens 16 --start-at <monotonic> --warmup 1 --duration 5

Each of `--concurrency` workers owns one keep-alive HTTP/1.1 connection and sends the next
request as soon as the previous stream ends. The client is a small asyncio protocol on
httptools' C parser rather than aiohttp, because a load generator that costs as
much CPU per request as the router under test would measure itself. It prints one JSON object:
every sample (start, ttft, e2e, ok, tokens) relative to `--start-at`, plus its own CPU seconds.
Several processes can share one `--start-at` (CLOCK_MONOTONIC is system-wide), so the parent
merges their samples into one timeline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

_DONE = b"data: [DONE]"


class ResponseError(Exception):
    """The connection broke or the reply was not valid HTTP."""


@dataclass
class Reply:
    """One finished HTTP response: status, decoded body, and when its first body byte came."""

    status: int
    body: bytes
    first_body_at: float
    keep_alive: bool


class HttpConnection(asyncio.Protocol):
    """One keep-alive connection that carries one request at a time (httptools' C parser)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Reply] | None = None
        self.body: list[bytes] = []
        self.first_body_at = 0.0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ResponseError(f"connection lost: {exc}"))

    def request(self, data: bytes) -> asyncio.Future[Reply]:
        """Send one request; the future resolves when its whole response has arrived."""
        assert self.transport is not None
        if self.closed:
            raise ResponseError("connection closed")
        self.body = []
        self.first_body_at = 0.0
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_exception(ResponseError(f"bad response: {exc}"))
            if self.transport is not None:
                self.transport.close()

    def on_body(self, body: bytes) -> None:
        if not self.first_body_at:
            self.first_body_at = time.monotonic()
        self.body.append(body)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            reply = Reply(
                self.parser.get_status_code(),
                b"".join(self.body),
                self.first_body_at,
                self.parser.should_keep_alive(),
            )
            waiter.set_result(reply)


def build_request(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def judge(reply: Reply) -> tuple[bool, int]:
    """(ok, streamed token events): ok means HTTP 200 and a stream that ended with [DONE]."""
    body = reply.body
    ok = reply.status == 200 and body.rstrip().endswith(_DONE)
    tokens = body.count(b"data: ") - body.count(_DONE)
    return ok, max(tokens, 0)


async def _connect(host: str, port: int) -> HttpConnection:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(HttpConnection, host, port)
    return proto


async def worker(
    target: tuple[str, int, bytes], start_at: float, stop_at: float, samples: list[list[float]]
) -> None:
    """Send requests back to back on one connection until `stop_at`; reconnect after errors."""
    host, port, data = target
    conn: HttpConnection | None = None
    while time.monotonic() < stop_at:
        t0 = time.monotonic()
        try:
            if conn is None or conn.closed:
                conn = await _connect(host, port)
            reply = await conn.request(data)
        except (OSError, ResponseError):
            samples.append([t0 - start_at, -1.0, time.monotonic() - t0, 0, 0])
            conn = None
            await asyncio.sleep(0.01)  # a refused connection must not spin
            continue
        t1 = time.monotonic()
        ok, tokens = judge(reply)
        ttft = reply.first_body_at - t0 if reply.first_body_at else -1.0
        samples.append([t0 - start_at, ttft, t1 - t0, int(ok), tokens])
        if not reply.keep_alive and conn.transport is not None:
            conn.transport.close()
            conn = None
    if conn is not None and conn.transport is not None:
        conn.transport.close()


async def run(args: argparse.Namespace) -> dict[str, object]:
    payload = {
        "model": args.model,
        "prompt": args.prompt,
        "max_tokens": args.max_tokens,
        "stream": True,
        "ignore_eos": True,
    }
    body = json.dumps(payload).encode()
    headers = dict(h.split(":", 1) for h in args.header)
    targets = []
    for url in args.url:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        targets.append((host, port, build_request(host, port, args.path, body, headers)))
    delay = args.start_at - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
    stop_at = args.start_at + args.warmup + args.duration
    samples: list[list[float]] = []
    jobs = [
        worker(targets[(i + args.offset) % len(targets)], args.start_at, stop_at, samples)
        for i in range(args.concurrency)
    ]
    await asyncio.gather(*jobs)
    return {"samples": samples}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--url", action="append", required=True, help="base URL (repeat: spread)")
    ap.add_argument("--path", default="/v1/completions")
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--prompt", default="hello world " * 8)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--offset", type=int, default=0, help="first URL index (spreads processes)")
    ap.add_argument("--header", action="append", default=[], help="'name: value' (repeatable)")
    ap.add_argument("--start-at", type=float, default=0.0, help="CLOCK_MONOTONIC start time")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--duration", type=float, default=5.0)
    args = ap.parse_args()
    if not args.start_at:
        args.start_at = time.monotonic()
    try:
        import uvloop

        result = uvloop.run(run(args))
    except ImportError:
        result = asyncio.run(run(args))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    json.dump(result, sys.stdout, separators=(",", ":"))


if __name__ == "__main__":
    main()
