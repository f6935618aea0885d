"""ASGI responses the proxy returns: plain bodies, errors, and the streaming relay."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from pdrouter.proxy.errors import RouterError

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
) -> None:
    """Relay `source` as an SSE body as it arrives. A failure after the first byte becomes a
    final SSE error event and [DONE]; `on_end(outcome, error)` is called exactly once with
    outcome ok, error or cancelled (client gone)."""
    raw = [_SSE, _NO_CACHE, *_raw(headers)]
    outcome = "cancelled"
    error: RouterError | None = None
    try:
        await send({"type": "http.response.start", "status": status, "headers": raw})
        try:
            async for chunk in source:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except RouterError as exc:
            error = exc
            await send({"type": "http.response.body", "body": exc.sse_event(), "more_body": True})
        if before_end is not None:
            before_end()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        outcome = "ok" if error is None else "error"
    finally:
        on_end(outcome, error)


class DisconnectWatcher:
    """Cancels the request's task when the client goes away, so every await on its behalf
    (prefill, waiting for KV, the decode stream) stops and cleans up at once."""

    __slots__ = ("_task", "_watch", "disconnected", "disconnected_at")

    def __init__(self, receive: Receive) -> None:
        self._task = asyncio.current_task()
        self.disconnected = False
        self.disconnected_at = 0.0
        self._watch = asyncio.get_running_loop().create_task(self._run(receive))

    async def _run(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                self.disconnected_at = time.monotonic()
                if self._task is not None:
                    self._task.cancel()
                return

    def close(self) -> None:
        self._watch.cancel()
