"""Graceful shutdown: fail /ready, keep serving, let in-flight requests finish, then cut.

On SIGTERM the router first answers 503 on /ready while it keeps serving for `--drain-delay`
seconds (time for load balancers and Kubernetes endpoints to stop sending), then stops accepting
connections (uvicorn's own shutdown) and gives in-flight requests `--shutdown-grace-period`
seconds. Whatever still runs then is cut: engine requests are aborted, so a stream ends with an
SSE error event (`shutting_down`) and `[DONE]`, a request that has not started its answer gets a
503, and requests still queued for admission get the same 503. A second SIGTERM, or SIGINT,
skips the wait.

uvicorn installs its signal handlers before the application starts; `install()` (called from
the lifespan) puts this one in front and hands the signal to uvicorn's when the drain delay is
over, so uvicorn's shutdown sequence runs unchanged after it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

from pdrouter.proxy.errors import RouterError

log = logging.getLogger(__name__)


def shutting_down() -> RouterError:
    return RouterError(
        503,
        "the router is shutting down; send the request again",
        type="service_unavailable",
        code="shutting_down",
        retryable=True,
        retry_after=1,
    )


class GracefulShutdown:
    """One per application; `cut_hooks` end what still runs when the grace period is over."""

    def __init__(self, drain_delay: float, grace_period: float) -> None:
        self.drain_delay = drain_delay
        self.grace_period = grace_period
        self.draining = False
        self.cut_hooks: list[Callable[[RouterError], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._uvicorn_handler: Any = None
        self._stopping = False
        self._timers: list[asyncio.TimerHandle] = []

    def install(self) -> None:
        """Take SIGTERM and SIGINT in front of uvicorn's handler (main thread only)."""
        self._loop = asyncio.get_running_loop()
        self._uvicorn_handler = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler: only set flags and hand work to the loop.
        loop = self._loop
        assert loop is not None
        if self.draining or sig == signal.SIGINT:
            self.draining = True
            loop.call_soon_threadsafe(self._stop_listening, sig)  # a second signal: no waiting
            return
        self.draining = True
        log.info(
            "SIGTERM: /ready fails now; serving for %gs more, then %gs for requests in flight",
            self.drain_delay,
            self.grace_period,
        )
        loop.call_soon_threadsafe(self._later, self.drain_delay, self._stop_listening, sig)

    def _later(self, delay: float, callback: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        self._timers.append(self._loop.call_later(delay, callback, *args))

    def _stop_listening(self, sig: int) -> None:
        handler = self._uvicorn_handler
        if callable(handler):
            handler(sig, None)  # uvicorn closes the listener and waits for connections
        if not self._stopping:
            self._stopping = True
            self._later(self.grace_period, self.cut)

    def cut(self) -> None:
        """End every request still in flight (see the module docstring)."""
        log.info("grace period over: ending what still runs")
        error = shutting_down()
        for hook in self.cut_hooks:
            hook(error)

    def close(self) -> None:
        """The application stops: no timers left behind."""
        for timer in self._timers:
            timer.cancel()
