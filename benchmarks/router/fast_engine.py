"""A lean fake vLLM engine for the router benchmark (a test double, named as such).

    python -m benchmarks.router.fast_engine --port 8100 [--ttft-ms 50 --itl-ms 10 --kv-ms 5]

The repo's full fake engine (tests/doubles/fake_engine.py, aiohttp) serves about 1,750
16-token streams per second per core: a 4-core router would need a dozen engine cores. This one
does only what the router benchmark sends, on an asyncio protocol with httptools' request
parser, so that engines are never the bottleneck:

- POST /v1/completions and /v1/chat/completions, streamed (vLLM's SSE chunk shapes, one chunked
  write per event, `stream_options.include_usage`) or not, `max_tokens` tokens;
- NIXL's `kv_transfer_params` handshake: a prefill (`do_remote_decode`) answers one token and
  params naming itself; a decode (`do_remote_prefill`) must carry those params (else 400) and
  sends its first token `--kv-ms` after the request, standing in for the KV pull;
- GET /health, /v1/models, /metrics (vLLM's gauge names, live running count);
- POST /admin/config {"ttft_ms", "itl_ms", "kv_ms"} between phases; GET /admin/stats.

Timing: first event `ttft` after the request, then one every `itl` (timers, no task per
stream). With both at 0 every token is still its own write, as a real engine sends them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Any, cast

import httptools
import orjson

from tests.doubles.engine_parts.kv import nixl_params
from tests.doubles.engine_parts.shapes import (
    DONE,
    StreamChunks,
    chat_body,
    completion_body,
    usage,
)

_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n"
)
_TOKEN_IDS = list(range(40, 104))  # any fixed ids of the shared vocabulary


class Engine:
    """Live settings and counters of one engine process."""

    def __init__(self, ttft_ms: float, itl_ms: float, kv_ms: float, engine_id: str) -> None:
        self.ttft = ttft_ms / 1000
        self.itl = itl_ms / 1000
        self.kv = kv_ms / 1000
        self.engine_id = engine_id
        self.port = 0
        self.running = 0
        self.stats = {"requests": 0, "prefill": 0, "decode": 0, "bad_decode": 0, "not_found": 0}
        self._ids = 0

    def next_id(self) -> str:
        self._ids += 1
        return f"{self.engine_id}-{self._ids}"

    def metrics(self) -> bytes:
        lines = [
            "# TYPE vllm:num_requests_running gauge",
            f'vllm:num_requests_running{{model_name="tiny"}} {self.running}',
            "# TYPE vllm:num_requests_waiting gauge",
            'vllm:num_requests_waiting{model_name="tiny"} 0',
            "# TYPE vllm:kv_cache_usage_perc gauge",
            'vllm:kv_cache_usage_perc{model_name="tiny"} 0.0',
        ]
        return ("\n".join(lines) + "\n").encode()


def _response(status: int, body: bytes, ctype: bytes = b"application/json") -> bytes:
    reason = {200: b"OK", 400: b"Bad Request", 404: b"Not Found"}.get(status, b"Error")
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n"
        % (status, reason, ctype, len(body))
        + body
    )


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class _Stream:
    """One streamed answer: one chunked write per tick, ticks driven by loop timers."""

    __slots__ = ("conn", "handle", "index", "itl", "start", "ticks")

    def __init__(self, conn: EngineConn, ticks: list[bytes], first: float, itl: float) -> None:
        self.conn = conn
        self.ticks = ticks
        self.itl = itl
        self.index = 0
        self.start = conn.loop.time() + first
        self.handle: asyncio.Handle | None
        if first <= 0 and itl <= 0:
            self.handle = conn.loop.call_soon(self.burst)
        else:
            self.handle = conn.loop.call_at(self.start, self.step)

    def burst(self) -> None:
        for tick in self.ticks:
            self.conn.write(tick)
        self.finish()

    def step(self) -> None:
        self.conn.write(self.ticks[self.index])
        self.index += 1
        if self.index == len(self.ticks):
            self.finish()
        else:
            self.handle = self.conn.loop.call_at(self.start + self.index * self.itl, self.step)

    def finish(self) -> None:
        self.handle = None
        self.conn.done()

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


class EngineConn(asyncio.Protocol):
    """One client connection: requests one at a time (no pipelining), keep-alive."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []
        self.stream: _Stream | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        # The client went away: stop generating, as vLLM aborts the request.
        if self.stream is not None:
            self.stream.cancel()
        if self.timer is not None:
            self.timer.cancel()
        if self.busy:
            self.busy = False
            self.engine.running -= 1
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.write(_response(400, b'{"error":"bad request"}'))
            self.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        path = self.url.split(b"?", 1)[0]
        engine = self.engine
        if method == b"POST" and path in (b"/v1/completions", b"/v1/chat/completions"):
            self.generate(path == b"/v1/chat/completions", b"".join(self.body))
        elif path == b"/health":
            self.write(_response(200, b""))
        elif path == b"/metrics":
            self.write(_response(200, engine.metrics(), b"text/plain; version=0.0.4"))
        elif path == b"/v1/models":
            model = {"id": "tiny", "object": "model", "owned_by": "vllm", "max_model_len": 1024}
            self.write(_response(200, orjson.dumps({"object": "list", "data": [model]})))
        elif path == b"/admin/config" and method == b"POST":
            conf = orjson.loads(b"".join(self.body) or b"{}")
            engine.ttft = float(conf.get("ttft_ms", engine.ttft * 1000)) / 1000
            engine.itl = float(conf.get("itl_ms", engine.itl * 1000)) / 1000
            engine.kv = float(conf.get("kv_ms", engine.kv * 1000)) / 1000
            self.write(_response(200, b"{}"))
        elif path == b"/admin/stats":
            self.write(_response(200, orjson.dumps({**engine.stats, "running": engine.running})))
        else:
            engine.stats["not_found"] += 1
            self.write(_response(404, b'{"error":"not found"}'))

    def generate(self, chat: bool, raw: bytes) -> None:
        engine = self.engine
        try:
            body = orjson.loads(raw)
            model = str(body.get("model", "tiny"))
            n = max(1, int(body.get("max_tokens") or body.get("max_completion_tokens") or 16))
        except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError):
            self.write(_response(400, b'{"error":"invalid JSON body"}'))
            return
        engine.stats["requests"] += 1
        params = body.get("kv_transfer_params") or {}
        first = engine.ttft
        kv_out: dict[str, Any] | None = None
        rid = ("chatcmpl-" if chat else "cmpl-") + engine.next_id()
        if params.get("do_remote_decode"):
            engine.stats["prefill"] += 1
            kv_out = nixl_params(
                block_ids=[0],
                engine_id=engine.engine_id,
                remote_request_id=rid,
                host="127.0.0.1",
                port=engine.port,
                tp_size=1,
                num_tokens=8,
                lease_s=60,
            )
        elif params.get("do_remote_prefill"):
            if not params.get("remote_request_id") or not params.get("remote_port"):
                engine.stats["bad_decode"] += 1
                self.write(_response(400, b'{"error":"decode without remote KV params"}'))
                return
            engine.stats["decode"] += 1
            first = engine.kv
        self.busy = True
        engine.running += 1
        use = usage(8, n, 0)
        tokens = [_TOKEN_IDS[i % len(_TOKEN_IDS)] for i in range(n)]
        if not body.get("stream"):
            text = " ".join(f"w{i}" for i in range(n))
            build = chat_body if chat else completion_body
            reply = _response(200, build(rid, 0, model, text, "length", use, kv_out))
            delay = first + engine.itl * (n - 1)
            self.timer = self.loop.call_later(delay, self.reply_later, reply)
            return
        sc = StreamChunks(chat, rid, 0, model)
        ticks = [
            _chunk(sc.token(t, "length" if i == n - 1 else None)) for i, t in enumerate(tokens)
        ]
        if chat:
            ticks[0] = _chunk(sc.role()) + ticks[0]
        # The usage event, [DONE] and the body's end follow the last token at once, as in vLLM.
        opts = body.get("stream_options")
        if isinstance(opts, dict) and opts.get("include_usage"):
            ticks[-1] += _chunk(sc.usage(use))
        ticks[-1] += _chunk(DONE) + b"0\r\n\r\n"
        self.write(_SSE_HEAD + b"\r\n")
        self.stream = _Stream(self, ticks, first, engine.itl)

    def reply_later(self, reply: bytes) -> None:
        self.timer = None
        self.write(reply)
        self.done()

    def done(self) -> None:
        self.stream = None
        if self.busy:
            self.busy = False
            self.engine.running -= 1

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _write_port_file(path: str, port: int) -> None:
    tmp = Path(path + ".tmp")
    tmp.write_text(str(port))
    tmp.replace(path)  # atomic: readers never see a partial number


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    engine = Engine(args.ttft_ms, args.itl_ms, args.kv_ms, args.engine_id or f"fast-{os.getpid()}")
    server = await loop.create_server(
        lambda: EngineConn(engine), args.host, args.port, backlog=4096, reuse_address=True
    )
    engine.port = int(server.sockets[0].getsockname()[1])
    if args.port_file:
        _write_port_file(args.port_file, engine.port)
    print(f"FAST_ENGINE_READY port={engine.port}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", default="")
    ap.add_argument("--engine-id", default="")
    ap.add_argument("--ttft-ms", type=float, default=0.0)
    ap.add_argument("--itl-ms", type=float, default=0.0)
    ap.add_argument("--kv-ms", type=float, default=0.0, help="decode's first token after KV")
    args = ap.parse_args(argv)
    try:
        import uvloop

        uvloop.run(serve(args))
    except ImportError:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
