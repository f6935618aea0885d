"""One pooled HTTP client for all engine traffic, with per-phase deadlines.

aiohttp is used rather than httpx: on the same streaming relay it costs roughly half the CPU per
request (see docs/benchmarks.md), and the router's throughput is bounded by that cost.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Protocol

import aiohttp


class EngineConnectError(Exception):
    """Nothing was sent or received: the request can safely go to another engine."""


class EngineTimeout(Exception):
    """A deadline passed; `what` names it (first byte, idle between chunks, total)."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class EngineBrokenStream(Exception):
    """The engine's response broke off after it started."""


_CONNECT_ERRORS = (
    aiohttp.ClientConnectorError,
    aiohttp.ServerDisconnectedError,  # a pooled keep-alive connection the engine had closed
    aiohttp.ClientOSError,
)


class _IdleWatch:
    """Cancels the current task when the engine sends nothing for `idle` seconds.

    Re-arming a timer per chunk (asyncio.timeout's reschedule) allocates a timer handle each
    time, about 13 us per chunk with uvloop; this keeps one timer that, when it fires before
    the engine has been quiet long enough, re-arms from the last chunk. Like before, the window
    runs from the last chunk's arrival; the cancellation only lands while the task waits on the
    engine, never inside the consumer's own awaits.
    """

    __slots__ = ("_cancelling", "_expired", "_handle", "_idle", "_task", "last", "loop", "waiting")

    def __init__(self, idle: float) -> None:
        self.loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._cancelling = self._task.cancelling() if self._task is not None else 0
        self._idle = idle
        self._expired = False
        self.waiting = False
        self.last = self.loop.time()
        self._handle = self.loop.call_at(self.last + idle, self._check)

    def _check(self) -> None:
        now = self.loop.time()
        due = self.last + self._idle
        if now < due:  # a chunk came since the timer was set: wait for the rest of the window
            self._handle = self.loop.call_at(due, self._check)
        elif not self.waiting:  # the consumer is busy relaying: cancel only inside readany()
            self._handle = self.loop.call_at(now + 0.05, self._check)
        else:
            self._expired = True
            if self._task is not None:
                self._task.cancel()

    def fired(self) -> bool:
        """True (and the cancellation absorbed) when the CancelledError came from this watch."""
        if not self._expired or self._task is None:
            return False
        return self._task.uncancel() <= self._cancelling

    def cancel(self) -> None:
        self._handle.cancel()


class EngineResponse(Protocol):
    """An engine response whose headers arrived."""

    status: int
    headers: Mapping[str, str]

    async def read(self, timeout: float) -> bytes: ...

    def chunks(self) -> AsyncIterator[bytes]: ...

    def release(self) -> None: ...


class EngineClient(Protocol):
    """What the proxy needs from an HTTP client for engine traffic."""

    first_byte_timeout: float
    idle_timeout: float

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def abort_all(self, error: BaseException) -> None:
        """End every request in flight with `error` and refuse new ones (shutdown's cut)."""
        ...

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        first_byte_timeout: float | None = None,
    ) -> EngineResponse: ...

    async def get(self, url: str, timeout: float) -> tuple[int, bytes]: ...


class UpstreamResponse:
    """An engine response whose headers arrived; the body is read or streamed from here."""

    __slots__ = ("_client", "_resp", "headers", "status")

    def __init__(self, resp: aiohttp.ClientResponse, client: UpstreamClient) -> None:
        self._resp = resp
        self._client = client
        self.status: int = resp.status
        self.headers: Mapping[str, str] = resp.headers

    async def read(self, timeout: float) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                return await self._resp.read()
        except TimeoutError:
            raise EngineTimeout("response body") from None
        except aiohttp.ClientPayloadError as exc:
            self._client.raise_if_aborted()
            raise EngineBrokenStream(str(exc)) from None
        except aiohttp.ClientError as exc:
            self._client.raise_if_aborted()
            raise EngineBrokenStream(f"{type(exc).__name__}: {exc}") from None
        finally:
            self.release()

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive; raises EngineTimeout if the engine goes quiet too long."""
        watch = _IdleWatch(self._client.idle_timeout)
        loop = watch.loop
        content = self._resp.content
        try:
            while True:
                watch.waiting = True
                chunk = await content.readany()
                watch.waiting = False
                if not chunk:
                    self._client.raise_if_aborted()
                    return
                watch.last = loop.time()
                yield chunk
        except asyncio.CancelledError:
            if watch.fired():
                raise EngineTimeout("idle between chunks") from None
            raise
        except aiohttp.ClientPayloadError as exc:
            self._client.raise_if_aborted()
            raise EngineBrokenStream(str(exc)) from None
        except aiohttp.ClientError as exc:
            self._client.raise_if_aborted()
            raise EngineBrokenStream(f"{type(exc).__name__}: {exc}") from None
        finally:
            watch.cancel()
            self.release()

    def release(self) -> None:
        # Closing (not releasing) an unfinished response drops its connection, which is how an
        # abandoned request is cancelled on the engine side.
        self._client._open.discard(self)
        if not self._resp.closed:
            if self._resp.content.at_eof():
                self._resp.release()
            else:
                self._resp.close()

    async def __aenter__(self) -> UpstreamResponse:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class UpstreamClient:
    """A shared aiohttp session (keep-alive pool, no connection cap) for engine requests."""

    def __init__(
        self,
        connect_timeout: float,
        first_byte_timeout: float,
        idle_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
    ):
        self.connect_timeout = connect_timeout
        self.first_byte_timeout = first_byte_timeout
        self.idle_timeout = idle_timeout
        self._ssl = ssl_context
        self._session: aiohttp.ClientSession | None = None
        self._open: set[UpstreamResponse] = set()
        self._aborted: BaseException | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=0,
            ttl_dns_cache=60,
            keepalive_timeout=30,
            enable_cleanup_closed=True,
            ssl=self._ssl if self._ssl is not None else True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None, connect=None, sock_connect=self.connect_timeout, sock_read=None
            ),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
            # Engines set no cookies; skipping the cookie jar saves work on every response.
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def abort_all(self, error: BaseException) -> None:
        self._aborted = error
        for resp in list(self._open):
            resp._resp.close()
        self._open.clear()

    def raise_if_aborted(self) -> None:
        if self._aborted is not None:
            raise self._aborted

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        first_byte_timeout: float | None = None,
    ) -> UpstreamResponse:
        """Send a POST and wait for the response headers within the first-byte deadline."""
        assert self._session is not None, "client not started"
        self.raise_if_aborted()
        deadline = first_byte_timeout or self.first_byte_timeout
        try:
            async with asyncio.timeout(deadline):
                resp = await self._session.post(url, data=body, headers=headers)
        except TimeoutError:
            raise EngineTimeout("first byte") from None
        except _CONNECT_ERRORS as exc:
            raise EngineConnectError(f"{type(exc).__name__}: {exc}") from None
        except aiohttp.ClientError as exc:
            raise EngineBrokenStream(f"{type(exc).__name__}: {exc}") from None
        upstream = UpstreamResponse(resp, self)
        self._open.add(upstream)
        return upstream

    async def get(self, url: str, timeout: float) -> tuple[int, bytes]:
        assert self._session is not None, "client not started"
        try:
            async with asyncio.timeout(timeout), self._session.get(url) as resp:
                return resp.status, await resp.read()
        except TimeoutError:
            raise EngineTimeout("get") from None
        except _CONNECT_ERRORS as exc:
            raise EngineConnectError(f"{type(exc).__name__}: {exc}") from None
