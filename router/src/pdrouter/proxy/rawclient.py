"""A lean HTTP/1.1 upstream client on asyncio protocols and httptools' response parser.

Same interface and errors as `client.UpstreamClient`; chosen with `--upstream-client httptools`.
It does only what engine traffic needs (POST/GET, keep-alive pools, content-length and chunked
bodies, TLS for https:// engines) and costs about half of aiohttp's CPU per streamed request
(benchmarks/router).

Backpressure: while a stream is relayed, a connection stops reading from the engine once
`HIGH_WATER` bytes wait for the relay (the client reads slowly) and resumes when the relay has
taken them, so a stalled client holds at most that much here and the rest stays in the
kernel's socket buffers and the engine.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Protocol
from urllib.parse import urlsplit

import httptools

from pdrouter.proxy.client import EngineBrokenStream, EngineConnectError, EngineTimeout

_POOL_LIMIT = 256  # idle keep-alive connections kept per engine
IDLE_CLOSE_S = 30.0  # pooled connections idle this long are closed (as aiohttp's keepalive_timeout)
HIGH_WATER = 256 * 1024  # bytes buffered for a slow relay before reading pauses

Key = tuple[str, int, bool]  # host, port, TLS


class _Headers(dict[str, str]):
    """Response headers, lower-case names."""


class BodySink(Protocol):
    """Takes a response body as the parser produces it (see RawResponse.pipe)."""

    def on_data(self, data: bytes) -> None:
        """Body bytes of one read from the engine (called once per read, not per chunk)."""

    def on_end(self) -> None:
        """The response is complete."""

    def on_error(self, exc: BaseException) -> None:
        """The connection failed before the response completed."""


class _Conn(asyncio.Protocol):
    """One keep-alive connection; parses one response at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self._parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self.closed = False
        self.paused = False
        self.idle_since = 0.0
        self.reset()

    def reset(self) -> None:
        if self.paused and self.transport is not None:
            self.transport.resume_reading()
        self.paused = False
        self.streaming = False  # a relay is reading: pause above HIGH_WATER
        self.buffered = 0
        self.status = 0
        self.headers = _Headers()
        self.headers_done: asyncio.Future[None] = self.loop.create_future()
        self.body: deque[bytes] = deque()
        self.complete = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.got_bytes = False
        self.keep_alive = False
        self.sink: BodySink | None = None

    # --- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete:
            self._fail(EngineBrokenStream(f"connection closed: {exc or 'EOF'}"))
        self._parser = None  # it refers back to this protocol: no cycle left to collect

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:
            return
        self.got_bytes = True
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(EngineBrokenStream("unexpected protocol upgrade"))
        except httptools.HttpParserError as exc:
            self._fail(EngineBrokenStream(f"invalid HTTP from engine: {exc}"))
            self.close()
        sink = self.sink
        if sink is not None:
            self._push(sink)

    def _push(self, sink: BodySink) -> None:
        """Hand a piped response what this read produced: the events of one read go to the
        client in one write, and the end (or failure) after them."""
        body = self.body
        if body:
            data = body.popleft() if len(body) == 1 else b"".join(body)
            body.clear()
            sink.on_data(data)
        if self.complete:
            self.sink = None
            sink.on_end()
        elif self.error is not None:
            self.sink = None
            sink.on_error(self.error)

    # --- httptools callbacks ----------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert parser is not None  # called from feed_data
        self.status = parser.get_status_code()
        # Ask now: after the message completes the parser has already reset its flags.
        self.keep_alive = parser.should_keep_alive()
        if not self.headers_done.done():
            self.headers_done.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        if self.streaming:
            self.buffered += len(body)
            if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
                self.paused = True
                self.transport.pause_reading()
        if self.waiter is not None:  # a task reads the body (not a pipe)
            self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    # --- helpers ----------------------------------------------------------------------------
    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        if not self.headers_done.done():
            self.headers_done.set_exception(exc)
            self.headers_done.exception()  # mark retrieved; post() reports it
        self._wake()
        sink = self.sink
        if sink is not None and not self.complete:
            self._push(sink)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class RawResponse:
    """An engine response whose headers arrived (same surface as client.UpstreamResponse)."""

    __slots__ = ("_client", "_conn", "_key", "_released", "headers", "status")

    def __init__(self, conn: _Conn, client: RawUpstreamClient, key: Key) -> None:
        self._conn = conn
        self._client = client
        self._key = key
        self._released = False
        self.status = conn.status
        self.headers: Mapping[str, str] = conn.headers

    async def _wait(self, deadline: float, what: str) -> None:
        conn = self._conn
        waiter = conn.loop.create_future()
        conn.waiter = waiter
        handle = conn.loop.call_at(deadline, _expire, waiter)
        try:
            await waiter
        except EngineTimeout:
            raise EngineTimeout(what) from None
        finally:
            handle.cancel()
            conn.waiter = None

    async def read(self, timeout: float) -> bytes:
        conn = self._conn
        deadline = conn.loop.time() + timeout
        try:
            while not conn.complete:
                if conn.error is not None:
                    raise conn.error
                await self._wait(deadline, "response body")
            return b"".join(conn.body)
        finally:
            self.release()

    async def chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        idle = self._client.idle_timeout
        body = conn.body
        conn.streaming = True
        try:
            while True:
                if body:
                    data = body.popleft() if len(body) == 1 else b"".join(body)
                    body.clear()
                    conn.buffered = 0
                    if conn.paused:  # the relay took everything: read from the engine again
                        conn.paused = False
                        if conn.transport is not None:
                            conn.transport.resume_reading()
                    yield data
                    continue
                if conn.complete:
                    return
                if conn.error is not None:
                    raise conn.error
                await self._wait(conn.loop.time() + idle, "idle between chunks")
        finally:
            self.release()

    def pipe(self, sink: BodySink) -> None:
        """Push the rest of the body to `sink` from the connection's own callbacks, with no
        task switch per event (proxy/relay.py). What already arrived is handed over at once."""
        conn = self._conn
        conn.sink = sink
        conn._push(sink)

    def pause_reading(self) -> None:
        """Stop reading from the engine (the client reads slowly); TCP pushes back on it."""
        transport = self._conn.transport
        if transport is not None and not self._conn.closed:
            transport.pause_reading()

    def resume_reading(self) -> None:
        transport = self._conn.transport
        if transport is not None and not self._conn.closed:
            transport.resume_reading()

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        conn = self._conn
        conn.sink = None
        self._client._busy.discard(conn)
        if conn.complete and not conn.closed and conn.keep_alive:
            self._client._return(self._key, conn)
        else:
            conn.close()  # unfinished: dropping the connection cancels the engine's request


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(EngineTimeout("deadline"))


class RawUpstreamClient:
    """Keep-alive pools per engine address; one request at a time per connection."""

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
        self._idle: dict[Key, list[_Conn]] = {}
        self._targets: dict[str, tuple[Key, bytes, bytes]] = {}
        self._busy: set[_Conn] = set()  # connections with a request on them
        self._sweeper: asyncio.TimerHandle | None = None
        self._aborted: BaseException | None = None

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()

    def abort_all(self, error: BaseException) -> None:
        """End every request in flight with `error` and refuse new ones (shutdown's cut)."""
        self._aborted = error
        for conn in list(self._busy):
            conn._fail(error)
            conn.close()
        self._busy.clear()

    def _target(self, url: str) -> tuple[Key, bytes, bytes]:
        cached = self._targets.get(url)
        if cached is None:
            parts = urlsplit(url)
            tls = parts.scheme == "https"
            host = parts.hostname or "127.0.0.1"
            port = parts.port or (443 if tls else 80)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            host_header = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            cached = ((host, port, tls), path.encode(), host_header.encode())
            if len(self._targets) < 10_000:
                self._targets[url] = cached
        return cached

    def _return(self, key: Key, conn: _Conn) -> None:
        pool = self._idle.setdefault(key, [])
        if len(pool) < _POOL_LIMIT:
            conn.reset()
            conn.idle_since = conn.loop.time()
            pool.append(conn)
            if self._sweeper is None:
                self._sweeper = conn.loop.call_later(IDLE_CLOSE_S, self._sweep)
        else:
            conn.close()

    def _sweep(self) -> None:
        """Close connections idle for IDLE_CLOSE_S: an engine that never closes idle keep-alive
        connections must not hold descriptors here after traffic stopped."""
        self._sweeper = None
        loop = asyncio.get_running_loop()
        horizon = loop.time() - IDLE_CLOSE_S
        left = False
        for pool in self._idle.values():
            keep = [c for c in pool if c.idle_since > horizon and not c.closed]
            for conn in pool:
                if conn.idle_since <= horizon:
                    conn.close()
            pool[:] = keep
            left = left or bool(keep)
        if left:
            self._sweeper = loop.call_later(IDLE_CLOSE_S, self._sweep)

    async def _connect(self, key: Key) -> _Conn:
        loop = asyncio.get_running_loop()
        host, port, tls = key
        context = None
        if tls:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Conn(loop),
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if tls else None,
                )
        except TimeoutError:
            raise EngineConnectError(f"connect to {host}:{port} timed out") from None
        except OSError as exc:  # includes TLS handshake and certificate errors
            raise EngineConnectError(f"{type(exc).__name__}: {exc}") from None
        return conn

    async def _request(
        self, method: bytes, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> RawResponse:
        if self._aborted is not None:
            raise self._aborted
        key, path, host = self._target(url)
        head = [method, b" ", path, b" HTTP/1.1\r\nhost: ", host, b"\r\n"]
        for name, value in headers.items():
            head += [name.encode("latin-1"), b": ", value.encode("latin-1"), b"\r\n"]
        head += [b"content-length: ", str(len(body)).encode(), b"\r\n\r\n", body]
        payload = b"".join(head)
        pool = self._idle.get(key)
        for attempt in range(2):
            conn = None
            while pool:
                candidate = pool.pop()
                if not candidate.closed:
                    conn = candidate
                    break
            reused = conn is not None
            if conn is None:
                conn = await self._connect(key)
            assert conn.transport is not None
            conn.transport.write(payload)
            self._busy.add(conn)
            # A plain timer on the headers future: asyncio.timeout and shield cost a few
            # microseconds more per request, and a cancelled wait closes the connection anyway.
            expiry = conn.loop.call_at(conn.loop.time() + timeout, _expire, conn.headers_done)
            try:
                await conn.headers_done
            except EngineTimeout:
                self._drop(conn)
                raise EngineTimeout("first byte") from None
            except EngineBrokenStream as exc:
                self._drop(conn)
                # A pooled connection the engine had closed: nothing was processed; try once
                # more on a fresh connection, as browsers and aiohttp do.
                if reused and not conn.got_bytes and attempt == 0:
                    pool = None
                    continue
                raise EngineConnectError(str(exc)) from None
            except BaseException:  # cancelled, or aborted by a shutdown
                self._drop(conn)
                raise
            finally:
                expiry.cancel()
            return RawResponse(conn, self, key)
        raise EngineConnectError(f"no usable connection to {key[0]}:{key[1]}")

    def _drop(self, conn: _Conn) -> None:
        self._busy.discard(conn)
        conn.close()

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        first_byte_timeout: float | None = None,
    ) -> RawResponse:
        timeout = first_byte_timeout or self.first_byte_timeout
        return await self._request(b"POST", url, body, headers, timeout)

    async def get(self, url: str, timeout: float) -> tuple[int, bytes]:
        resp = await self._request(b"GET", url, b"", {}, timeout)
        return resp.status, await resp.read(timeout)
