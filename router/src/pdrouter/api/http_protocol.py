"""uvicorn's httptools HTTP protocol with read deadlines (slowloris protection).

uvicorn arms no timer on a fresh connection and cancels its keep-alive timer on every byte, so a
client that dribbles a request's headers, or stops in the middle of its body, holds a
connection forever. This protocol gives each request `--request-header-timeout` seconds for its
headers (from the connection opening, or from the first byte on a kept-alive connection) and
`--request-body-timeout` seconds for its body, then answers 408 and closes the connection.
It is passed to uvicorn as `http=` (see cli.py); the limits reach it through the lifespan
state, so every worker process uses its own settings.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from pdrouter.proxy.errors import RouterError
from pdrouter.proxy.responses import DISCONNECT_HOOK

EDGE_STATE_KEY = "pdstack_edge"


@dataclass(frozen=True)
class EdgeLimits:
    """Read deadlines; `count(reason)` is told of every connection they close."""

    header_timeout: float
    body_timeout: float
    count: Callable[[str], None]


def _timeout_response(what: str, seconds: float) -> bytes:
    err = RouterError(
        408,
        f"request {what} not received within {seconds:g}s",
        type="invalid_request_error",
        code=f"{what}_timeout",
    )
    body = err.body()
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class DeadlineHttpProtocol(HttpToolsProtocol):
    """One timer per connection: armed for the headers, re-armed for the body, off in between
    (uvicorn's keep-alive timeout covers idle connections)."""

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._limits: EdgeLimits | None = app_state.get(EDGE_STATE_KEY)
        self._timer: asyncio.TimerHandle | None = None

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._expired, what, seconds)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self._limits is not None:
            self._arm(self._limits.header_timeout, "header")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        cycle = self.cycle
        super().connection_lost(exc)
        if cycle is not None and cycle.disconnected:
            _tell_disconnected(cycle)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._limits is not None and self._timer is None:
            self._arm(self._limits.header_timeout, "header")

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        # This protocol tells the request when its client leaves (responses.DisconnectWatcher).
        setattr(self.cycle, DISCONNECT_HOOK, None)
        if self._limits is not None:
            self._arm(self._limits.body_timeout, "body")

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def _expired(self, what: str, seconds: float) -> None:
        self._timer = None
        limits = self._limits
        transport = self.transport
        if limits is None or transport is None or transport.is_closing():
            return
        limits.count(f"{what}_timeout")
        cycle = self.cycle
        busy = cycle is not None and not cycle.response_complete
        if not busy or not cycle.response_started:
            transport.write(_timeout_response(what, seconds))
        if busy:
            # The app waits for the body: it sees the client as gone, and writes nothing more.
            cycle.disconnected = True
            cycle.message_event.set()
            _tell_disconnected(cycle)
        transport.close()


def _tell_disconnected(cycle: Any) -> None:
    hook = getattr(cycle, DISCONNECT_HOOK, None)
    if hook is not None:
        hook()
