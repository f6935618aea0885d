"""ASGI responses the proxy returns: plain bodies, errors, and the streaming relay."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from pdrouter.proxy.errors import RouterError
from pdrouter.proxy.outcome import PushStream
from pdrouter.proxy.relay import ClientWriter

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON = (b"content-type", b"application/json")
_SSE = (b"content-type", b"text/event-stream; charset=utf-8")
_NO_CACHE = (b"cache-control", b"no-cache")


def _raw(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


async def send_body(
    send: Send,
    status: int,
    body: bytes,
    headers: Mapping[str, str] | None = None,
    content_type: tuple[bytes, bytes] = _JSON,
) -> None:
    raw = [content_type, (b"content-length", str(len(body)).encode())]
    if headers:
        raw += _raw(headers)
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_error(
    send: Send, err: RouterError, headers: Mapping[str, str] | None = None
) -> None:
    merged = dict(err.headers())
    if headers:
        merged.update(headers)
    await send_body(send, err.status, err.body(), merged)


StreamSource = AsyncIterator[bytes]
StreamEnd = Callable[[str, RouterError | None], None]


async def send_stream(
    send: Send,
    source: StreamSource,
    headers: Mapping[str, str],
    on_end: StreamEnd,
    before_end: Callable[[], None] | None = None,
    status: int = 200,
    push: PushStream | None = None,
) -> None:
    """Relay `source` as an SSE body as it arrives (or run `push` instead, when the server
    lets us write to the client directly). A failure after the first byte becomes a final SSE
    error event and [DONE]; `on_end(outcome, error)` is called exactly once with outcome ok,
    error or cancelled (client gone)."""
    raw = [_SSE, _NO_CACHE, *_raw(headers)]
    outcome = "cancelled"
    error: RouterError | None = None
    try:
        await send({"type": "http.response.start", "status": status, "headers": raw})
        writer = direct_writer(send) if push is not None else None
        if push is not None and writer is not None:
            error = await push.run(writer)
        else:
            try:
                async for chunk in source:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except RouterError as exc:
                error = exc
        if error is not None:
            await send({"type": "http.response.body", "body": error.sse_event(), "more_body": True})
        if before_end is not None:
            before_end()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        outcome = "ok" if error is None else "error"
    finally:
        on_end(outcome, error)


_UVICORN_HTTPTOOLS = "uvicorn.protocols.http.httptools_impl"


class _UvicornChunkedWriter:
    """Writes chunked body frames straight to uvicorn's transport, as its `send` would, minus a
    coroutine and a message dict per event; waits on uvicorn's own write flow control."""

    __slots__ = ("_cycle", "_flow", "_transport")

    def __init__(self, cycle: Any) -> None:
        self._cycle = cycle
        self._flow = cycle.flow
        self._transport = cycle.transport

    def write(self, data: bytes) -> None:
        if not self._cycle.disconnected:
            self._transport.write(b"%x\r\n%b\r\n" % (len(data), data))

    def paused(self) -> bool:
        return bool(self._flow.write_paused)

    async def drain(self) -> None:
        if self._flow.write_paused and not self._cycle.disconnected:
            await self._flow.drain()


def direct_writer(send: Send) -> ClientWriter | None:
    """A direct writer for this response when uvicorn's httptools protocol serves it and the
    response started with chunked encoding; None for any other server (then `send` is used)."""
    cycle = getattr(send, "__self__", None)
    if cycle is None or type(cycle).__module__ != _UVICORN_HTTPTOOLS:
        return None
    if getattr(cycle, "chunked_encoding", None) is not True or cycle.scope["method"] == "HEAD":
        return None
    if not cycle.response_started or cycle.response_complete:
        return None
    return _UvicornChunkedWriter(cycle)


# The attribute through which the server's protocol tells a request that its client left (see
# api/http_protocol.py): present (None) on the cycles of a protocol that calls it, set to a
# callback while a request watches.
DISCONNECT_HOOK = "pdstack_on_disconnect"


class DisconnectWatcher:
    """Cancels the request's task when the client goes away, so every await on its behalf
    (prefill, waiting for KV, the decode stream) stops and cleans up at once.

    Served by our uvicorn protocol, it is a callback the protocol calls from `connection_lost`:
    no task per request, and nothing left for the cycle collector (a watcher task cancelled at
    the end of every request left a CancelledError, its traceback and the request's coroutine
    in a reference cycle). Any other server: a task that waits on `receive()`."""

    __slots__ = ("_cycle", "_task", "_watch", "disconnected")

    def __init__(self, receive: Receive) -> None:
        self._task = asyncio.current_task()
        self.disconnected = False
        self._watch: asyncio.Task[None] | None = None
        cycle = getattr(receive, "__self__", None)
        if cycle is not None and getattr(cycle, DISCONNECT_HOOK, False) is None:
            self._cycle = cycle
            setattr(cycle, DISCONNECT_HOOK, self._on_disconnect)
            if cycle.disconnected:  # gone before we watched
                self._on_disconnect()
        else:
            self._cycle = None
            self._watch = asyncio.get_running_loop().create_task(self._run(receive))

    def _on_disconnect(self) -> None:
        if self.disconnected:
            return
        self.disconnected = True
        self.close()
        if self._task is not None:
            self._task.cancel()

    async def _run(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self._watch = None
                self._on_disconnect()
                return

    def close(self) -> None:
        """Stop watching (the response is complete or being answered); idempotent."""
        cycle = self._cycle
        if cycle is not None:
            self._cycle = None
            setattr(cycle, DISCONNECT_HOOK, None)  # breaks cycle -> watcher -> task -> cycle
        watch = self._watch
        if watch is not None:
            self._watch = None
            watch.cancel()
