"""The router's end of LMCache's native PD protocol: a ZMQ PULL socket that collects the
prefiller's per-TP-rank "KV ready" notifications (LMCache's msgspec `ProxyNotif`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import msgspec
import zmq
import zmq.asyncio

log = logging.getLogger(__name__)

_STRAY_TTL = 30.0  # seconds a notification for an unknown request id is remembered
# A ProxyNotif is a msgpack map of a type tag and a request id: well under 1 KiB.
DEFAULT_MAX_MESSAGE_BYTES = 4096


def zmq_tcp_address(host: str, port: int) -> str:
    """`tcp://host:port`, with an IPv6 address in brackets."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"tcp://{host}:{port}"


def notified_request_id(message: bytes) -> str | None:
    """Extract `req_id` from a msgpack-encoded ProxyNotif (tagged map or array form)."""
    try:
        obj: Any = msgspec.msgpack.decode(message)
    except msgspec.DecodeError:
        return None
    if isinstance(obj, dict):
        value = obj.get("req_id")
        return str(value) if value is not None else None
    if isinstance(obj, list | tuple):
        # array_like structs: [tag?, req_id]; the request id is the last string field
        strings = [x for x in obj if isinstance(x, str)]
        return strings[-1] if strings else None
    return None


class _Waiter:
    __slots__ = ("expected", "future", "seen")

    def __init__(self, expected: int, future: asyncio.Future[None]) -> None:
        self.expected = expected
        self.seen = 0
        self.future = future


class KvReadyListener:
    """Waits for `expected` notifications per request id, with a deadline. A peer that sends a
    message over `max_message_bytes` is disconnected by ZMQ before the message is buffered."""

    def __init__(
        self, host: str, port: int, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    ) -> None:
        self.address = zmq_tcp_address(host, port)
        self.max_message_bytes = max_message_bytes
        self._ctx: zmq.asyncio.Context | None = None
        self._sock: zmq.asyncio.Socket | None = None
        self._task: asyncio.Task[None] | None = None
        self._waiters: dict[str, _Waiter] = {}
        self._stray: dict[str, tuple[int, float]] = {}
        self.received = 0

    async def start(self) -> None:
        self._ctx = zmq.asyncio.Context()
        self._sock = self._ctx.socket(zmq.PULL)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
        if self.address.startswith("tcp://["):
            self._sock.setsockopt(zmq.IPV6, 1)
        self._sock.bind(self.address)
        self._task = asyncio.create_task(self._loop(), name="lmcache-kv-ready")
        log.info(
            "LMCache PD notifications: listening on %s (messages up to %d bytes)",
            self.address,
            self.max_message_bytes,
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._sock is not None:
            self._sock.close(0)
        if self._ctx is not None:
            self._ctx.term()

    def register(self, req_id: str, expected: int) -> asyncio.Future[None]:
        """Call before the prefill is sent, so an early notification is never missed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(max(expected, 1), future)
        seen, _ = self._stray.pop(req_id, (0, 0.0))
        waiter.seen = seen
        self._waiters[req_id] = waiter
        if waiter.seen >= waiter.expected:
            future.set_result(None)
        return future

    def forget(self, req_id: str) -> None:
        self._waiters.pop(req_id, None)

    def pending(self) -> int:
        return len(self._waiters)

    async def _loop(self) -> None:
        assert self._sock is not None
        while True:
            message = await self._sock.recv()
            self.received += 1
            req_id = notified_request_id(message)
            if req_id is None:
                log.warning("LMCache PD: undecodable notification (%d bytes)", len(message))
                continue
            waiter = self._waiters.get(req_id)
            if waiter is None:
                self._remember_stray(req_id)
                continue
            waiter.seen += 1
            if waiter.seen >= waiter.expected and not waiter.future.done():
                waiter.future.set_result(None)

    def _remember_stray(self, req_id: str) -> None:
        now = time.monotonic()
        count, _ = self._stray.get(req_id, (0, now))
        self._stray[req_id] = (count + 1, now)
        if len(self._stray) > 1000:
            horizon = now - _STRAY_TTL
            self._stray = {k: v for k, v in self._stray.items() if v[1] >= horizon}
