"""One pooled HTTP client for all engine traffic, with per-phase deadlines.

aiohttp is used rather than httpx: on the same streaming relay it costs roughly half the CPU per
request (see docs/benchmarks.md), and the router's throughput is bounded by that cost.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from types import TracebackType

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


class UpstreamResponse:
    """An engine response whose headers arrived; the body is read or streamed from here."""

    __slots__ = ("_client", "_resp", "headers", "status")

    def __init__(self, resp: aiohttp.ClientResponse, client: UpstreamClient) -> None:
        self._resp = resp
        self._client = client
        self.status = resp.status
        self.headers = resp.headers

    async def read(self, timeout: float) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                return await self._resp.read()
        except TimeoutError:
            raise EngineTimeout("response body") from None
        except aiohttp.ClientPayloadError as exc:
            raise EngineBrokenStream(str(exc)) from None
        except aiohttp.ClientError as exc:
            raise EngineBrokenStream(f"{type(exc).__name__}: {exc}") from None
        finally:
            self.release()

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive; raises EngineTimeout if the engine goes quiet too long."""
        idle = self._client.idle_timeout
        loop = asyncio.get_running_loop()
        content = self._resp.content
        try:
            async with asyncio.timeout(loop.time() + idle) as deadline:
                while True:
                    chunk = await content.readany()
                    if not chunk:
                        return
                    deadline.reschedule(loop.time() + idle)
                    yield chunk
        except TimeoutError:
            raise EngineTimeout("idle between chunks") from None
        except aiohttp.ClientPayloadError as exc:
            raise EngineBrokenStream(str(exc)) from None
        except aiohttp.ClientError as exc:
            raise EngineBrokenStream(f"{type(exc).__name__}: {exc}") from None
        finally:
            self.release()

    def release(self) -> None:
        # Closing (not releasing) an unfinished response drops its connection, which is how an
        # abandoned request is cancelled on the engine side.
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

    def __init__(self, connect_timeout: float, first_byte_timeout: float, idle_timeout: float):
        self.connect_timeout = connect_timeout
        self.first_byte_timeout = first_byte_timeout
        self.idle_timeout = idle_timeout
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=0, ttl_dns_cache=60, keepalive_timeout=30, enable_cleanup_closed=True
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None, connect=None, sock_connect=self.connect_timeout, sock_read=None
            ),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        first_byte_timeout: float | None = None,
    ) -> UpstreamResponse:
        """Send a POST and wait for the response headers within the first-byte deadline."""
        assert self._session is not None, "client not started"
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
        return UpstreamResponse(resp, self)

    async def get(self, url: str, timeout: float) -> tuple[int, bytes]:
        assert self._session is not None, "client not started"
        try:
            async with asyncio.timeout(timeout), self._session.get(url) as resp:
                return resp.status, await resp.read()
        except TimeoutError:
            raise EngineTimeout("get") from None
        except _CONNECT_ERRORS as exc:
            raise EngineConnectError(f"{type(exc).__name__}: {exc}") from None
