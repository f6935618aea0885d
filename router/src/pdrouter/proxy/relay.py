"""The streaming relay's per-event work, and a push relay with no task switch per event.

`StreamClock` times TTFT and ITL for one stream (both relays use it). `PushRelay` moves an engine
stream from the upstream connection's own read callback straight into the client's transport:
the events of one read leave in one write, nothing is queued between the two sockets, and the
request's task sleeps until the stream ends, fails, or the client's transport asks it to wait.
It applies when the server lets us write to the client connection directly (see
`responses.direct_writer`) and the stream needs no rewriting; otherwise `upstream.relay_chunks`
does the same job as an async iterator.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Any, Protocol

from pdrouter.proxy.client import EngineTimeout
from pdrouter.proxy.errors import (
    RouterError,
    upstream_broken,
    upstream_timeout,
    upstream_truncated,
)
from pdrouter.proxy.rawclient import RawResponse
from pdrouter.proxy.tracking import EngineCall
from pdrouter.stats.router_metrics import RouterMetrics

_DONE = b"[DONE]"
_GAPS_HELD = 256  # a long stream puts its gaps into the histogram in batches of this


class StreamClock:
    """TTFT (once) and the gaps between token chunks of one stream. Gaps are kept in a list and
    put into the ITL histogram when the stream ends: one lock-free append per event instead of a
    histogram update with two locked increments."""

    __slots__ = ("_arrived", "_gaps", "_itl", "_last", "_ttft", "call", "first_token_seen")

    def __init__(
        self,
        call: EngineCall,
        metrics: RouterMetrics,
        model: str,
        arrived: float,
        first_token_seen: bool = False,
    ) -> None:
        self.call = call
        self._ttft = metrics.ttft.labels(model)
        self._itl = metrics.itl.labels(model)
        self._arrived = arrived
        self.first_token_seen = first_token_seen
        self._last = 0.0
        self._gaps: list[float] = []

    def on_chunk(self, chunk: bytes, now: float) -> None:
        call = self.call
        carried = call.first_token_at is None and call.observe_chunk(chunk, now)
        last = self._last
        if last:  # the common case: a token was seen, every later chunk ends a gap
            gaps = self._gaps
            gaps.append(now - last)
            if len(gaps) >= _GAPS_HELD:
                self.flush()
        elif carried and not self.first_token_seen:
            self._ttft.observe(now - self._arrived)
            self.first_token_seen = True
        elif not self.first_token_seen:
            return
        self._last = now

    def flush(self) -> None:
        """Record the gaps seen so far (at the end of the stream, whatever the end): into the
        ITL histogram and the engine's request statistics."""
        gaps = self._gaps
        if gaps:
            observe_many(self._itl, gaps)
            self.call.engine.requests.on_token_gaps(time.monotonic(), sum(gaps), len(gaps))
            self._gaps = []


def observe_many(histogram: Any, values: list[float]) -> None:
    """Histogram.observe for many values at once: the same buckets and sum as observing them one
    by one (prometheus_client's child: `_upper_bounds`, `_buckets`, `_sum`)."""
    bounds = histogram._upper_bounds
    counts = [0] * len(bounds)
    for value in values:
        counts[bisect_left(bounds, value)] += 1
    for i, count in enumerate(counts):
        if count:
            histogram._buckets[i].inc(count)
    histogram._sum.inc(sum(values))


def stream_failure(exc: BaseException, name: str) -> RouterError:
    """The client-facing error for an engine stream that failed after its headers."""
    if isinstance(exc, RouterError):
        return exc
    if isinstance(exc, EngineTimeout):
        return upstream_timeout(name, exc.what)
    return upstream_broken(name, str(exc))


class ClientWriter(Protocol):
    """Direct writes of response body bytes to the client connection."""

    def write(self, data: bytes) -> None: ...

    def paused(self) -> bool:
        """The transport's buffer is above its high-water mark: stop feeding it."""
        ...

    async def drain(self) -> None:
        """Until the client has read enough for writing to go on."""


class PushRelay:
    """Relays one engine stream from the upstream callbacks into a ClientWriter (see module)."""

    __slots__ = (
        "_deadline",
        "_error",
        "_finished",
        "_last",
        "_last_data",
        "_name",
        "_paused",
        "_prev",
        "_resp",
        "_timer",
        "_wake",
        "_writer",
        "clock",
        "map_error",
    )

    def __init__(
        self,
        resp: RawResponse,
        clock: StreamClock,
        idle_timeout: float,
        map_error: Callable[[RouterError], RouterError] | None = None,
    ) -> None:
        self._resp = resp
        self.clock = clock
        self.map_error = map_error
        self._name = clock.call.engine.endpoint.display_name
        self._deadline = idle_timeout
        self._prev = self._last = b""  # the last two reads: where [DONE] must be at the end
        self._error: RouterError | None = None
        self._finished = False
        self._wake: asyncio.Future[None] | None = None
        self._writer: ClientWriter | None = None
        self._paused = False
        self._last_data = 0.0
        self._timer: asyncio.TimerHandle | None = None

    async def run(self, writer: ClientWriter) -> RouterError | None:
        """Relay until the engine's stream ends; the error to report to the client, if any.
        Cancelling the task (the client left) drops the engine connection, which aborts the
        engine's request."""
        loop = asyncio.get_running_loop()
        self._writer = writer
        self._last_data = time.monotonic()
        self._timer = loop.call_later(self._deadline, self._check_idle)
        self._wake = loop.create_future()
        try:
            self._resp.pipe(self)  # may deliver what already arrived, even the end, at once
            while not self._finished:
                await self._wake
                if self._finished:
                    break
                await writer.drain()  # the client's transport asked us to wait
                self._paused = False
                self._last_data = time.monotonic()  # the engine's idle deadline starts again
                self._wake = loop.create_future()
                self._resp.resume_reading()
            return self._error
        finally:
            if self._timer is not None:
                self._timer.cancel()
            self.clock.flush()
            if not self._finished:
                self._resp.release()
                self.clock.call.close("cancelled")

    # --- BodySink -------------------------------------------------------------------------------
    def on_data(self, data: bytes) -> None:
        now = time.monotonic()
        self._last_data = now
        self.clock.on_chunk(data, now)
        self._prev = self._last
        self._last = data
        writer = self._writer
        assert writer is not None
        writer.write(data)
        if not self._paused and writer.paused():
            self._paused = True
            self._resp.pause_reading()
            self._set()

    def on_end(self) -> None:
        if self._finished:
            return
        call = self.clock.call
        if _DONE in self._prev[-32:] + self._last[-32:]:
            call.close("ok")
        else:
            call.close("error", engine_fault=True)
            self._error = self._mapped(upstream_truncated(self._name))
        self._finish()

    def on_error(self, exc: BaseException) -> None:
        if self._finished:
            return
        if isinstance(exc, RouterError):  # the router's own cut (shutdown), not the engine's
            self.clock.call.close("cancelled")
        else:
            self.clock.call.close("error", engine_fault=True)
        self._error = self._mapped(stream_failure(exc, self._name))
        self._finish()

    # --- helpers --------------------------------------------------------------------------------
    def _mapped(self, err: RouterError) -> RouterError:
        return err if self.map_error is None else self.map_error(err)

    def _finish(self) -> None:
        self._finished = True
        self._resp.release()
        self._set()

    def _set(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def _check_idle(self) -> None:
        """One timer per stream, re-armed only when it fires early (not once per event)."""
        idle = time.monotonic() - self._last_data
        loop = asyncio.get_running_loop()
        if self._paused or idle < self._deadline:
            # A paused relay waits on the client, not the engine: its deadline is not running.
            wait = self._deadline if self._paused else self._deadline - idle
            self._timer = loop.call_later(wait, self._check_idle)
            return
        self._timer = None
        self.on_error(EngineTimeout("idle between chunks"))  # drops the engine connection
