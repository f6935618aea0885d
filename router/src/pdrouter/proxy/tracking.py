"""Accounting for one request on one engine: in-flight, breaker, per-engine stats, metrics.

An `EngineCall` is the call's guard on its engine's state: it takes the in-flight count and, when
the engine's breaker is half-open, a trial slot; `close()` gives both back exactly once, however
the call ends (success, engine failure, client error, cancellation, client disconnect).
"""

from __future__ import annotations

import time

from pdrouter.proxy.token_scan import TAIL_BYTES, carries_token
from pdrouter.stats.engine_state import EngineState
from pdrouter.stats.router_metrics import RouterMetrics


class EngineCall:
    """Opened when a request is dispatched to an engine; closed exactly once."""

    __slots__ = (
        "_closed",
        "_tail",
        "_token",
        "engine",
        "first_token_at",
        "metrics",
        "phase",
        "started",
    )

    def __init__(self, engine: EngineState, metrics: RouterMetrics, phase: str) -> None:
        self.engine = engine
        self.metrics = metrics
        self.phase = phase
        self.started = time.monotonic()
        self.first_token_at: float | None = None
        self._tail = b""
        self._closed = False
        engine.in_flight += 1
        self._token = engine.breaker.acquire()
        engine.requests.on_start(self.started)

    def observe_chunk(self, chunk: bytes, now: float) -> bool:
        """Feed a streamed chunk until one carries the first token: True for that one. (The
        gaps after it are the stream's: relay.StreamClock reports them to the engine.)"""
        if self.first_token_at is not None:
            return False
        if not carries_token(self._tail, chunk):
            self._tail = chunk[-TAIL_BYTES:]
            return False
        self.first_token_at = now
        self.engine.requests.on_first_token(now, now - self.started)
        return True

    def close(self, outcome: str, engine_fault: bool = False) -> None:
        """outcome: ok, client_error, error, cancelled. engine_fault charges the breaker."""
        if self._closed:
            return
        self._closed = True
        now = time.monotonic()
        engine = self.engine
        engine.in_flight -= 1
        if engine_fault:
            engine.record_failure(self._token)
        elif outcome in ("ok", "client_error"):
            engine.record_success(self._token)
        elif self._token:
            engine.breaker.release(self._token)  # no verdict on the engine: free the trial slot
        engine.requests.on_finish(now, now - self.started)
        name = engine.endpoint.display_name
        role = engine.endpoint.role.value
        self.metrics.engine_requests.labels(name, role, self.phase, outcome).inc()
        if outcome == "ok":
            self.metrics.engine_latency.labels(name, role).observe(now - self.started)
            if self.first_token_at is not None:
                self.metrics.engine_ttft.labels(name, role).observe(
                    self.first_token_at - self.started
                )
