"""A worker's side: engines, health, load and breakers come from the control plane."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import orjson

from pdrouter.discovery.base import EndpointsListener
from pdrouter.discovery.endpoint import Endpoint
from pdrouter.kvcache.index import KvBlockIndex
from pdrouter.kvcache.subscriber import StreamStats
from pdrouter.stats.breaker import BreakerState
from pdrouter.stats.engine_metrics import EngineMetrics
from pdrouter.stats.engine_state import EnginePool, EngineView
from pdrouter.workers.follower_breaker import FollowerBreaker
from pdrouter.workers.kv_feed import apply_message
from pdrouter.workers.protocol import encode, endpoint_from_wire

log = logging.getLogger(__name__)
REPORT_INTERVAL = 0.1


class ControlPlaneFollower:
    """Implements the Discovery interface for a worker; mirrors the control plane's view of
    every engine into the worker's pool and reports this worker's outcomes, in-flight counts
    and request rates back. Set `pool` before `start()`."""

    def __init__(
        self,
        socket_path: str,
        kv_index: KvBlockIndex | None = None,
        kv_stats: StreamStats | None = None,
    ) -> None:
        self.socket_path = socket_path
        self.pool: EnginePool | None = None
        # The control plane owns the KV index; a worker keeps a replica fed by its messages.
        self.kv_index = kv_index
        self.kv_stats = kv_stats or StreamStats()
        self._endpoints: tuple[Endpoint, ...] = ()
        self._tasks: list[asyncio.Task[None]] = []
        self._writer: asyncio.StreamWriter | None = None
        self._urgent: asyncio.Event | None = None
        self._reported_in_flight: dict[str, int] = {}
        self._reported_qps: dict[str, float] = {}

    def new_breaker(self) -> FollowerBreaker:
        return FollowerBreaker(self._wake)

    def _wake(self) -> None:
        if self._urgent is not None:
            self._urgent.set()

    async def start(self, on_change: EndpointsListener) -> None:
        assert self.pool is not None, "set the follower's pool first"
        self._urgent = asyncio.Event()
        reader, self._writer = await asyncio.open_unix_connection(self.socket_path)
        # Apply the first endpoints + stats before serving, so /ready is right at once.
        for _ in range(2):
            line = await reader.readline()
            if line:
                self._apply(orjson.loads(line), on_change)
        self._tasks = [
            asyncio.create_task(self._read(reader, on_change), name="control-plane-reader"),
            asyncio.create_task(self._report(), name="control-plane-reporter"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._writer is not None:
            self._writer.close()

    def endpoints(self) -> tuple[Endpoint, ...]:
        return self._endpoints

    async def _read(self, reader: asyncio.StreamReader, on_change: EndpointsListener) -> None:
        while line := await reader.readline():
            self._apply(orjson.loads(line), on_change)
        log.error("control plane connection closed; keeping the last known engine state")

    def _apply(self, message: dict[str, Any], on_change: EndpointsListener) -> None:
        if self.kv_index is not None and apply_message(self.kv_index, self.kv_stats, message):
            return
        if message.get("t") == "endpoints":
            self._endpoints = tuple(endpoint_from_wire(e) for e in message["endpoints"])
            on_change(self._endpoints)
            return
        assert self.pool is not None
        slots = message.get("slots", {})
        for engine_id, info in message.get("engines", {}).items():
            state = self.pool.get(engine_id)
            if state is None:
                continue
            metrics = EngineMetrics(*info["m"])
            state.healthy = info["h"]
            state.probed = info["p"]
            state.last_scrape_error = info["e"]
            state.load_fresh = info["f"]
            state.metrics = metrics
            state.recent_failures = info["r"]
            breaker_state, episode = info["b"]
            breaker = state.breaker
            assert isinstance(breaker, FollowerBreaker)
            breaker.apply(breaker_state, episode, slots.get(engine_id, 0))
            own = self._reported_in_flight.get(engine_id, 0)
            state.peer_in_flight = max(info["i"] - own, 0)
            state.published = EngineView(
                healthy=info["h"],
                breaker=BreakerState(breaker_state),
                in_flight=info["i"],
                qps=info["q"],
                recent_failures=info["r"],
                load_source="engine" if info["f"] else "router",
                metrics=metrics,
                last_error=info["e"],
            )

    async def _report(self) -> None:
        assert self._writer is not None and self._urgent is not None and self.pool is not None
        urgent = self._urgent
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(urgent.wait(), REPORT_INTERVAL)
            urgent.clear()
            now = time.monotonic()
            outcomes: dict[str, list[int]] = {}
            in_flight: dict[str, int] = {}
            qps: dict[str, float] = {}
            for s in self.pool.all():
                breaker = s.breaker
                assert isinstance(breaker, FollowerBreaker)
                tally = breaker.take_tally()
                if tally is not None:
                    outcomes[s.id] = tally.to_wire()
                if s.in_flight:
                    in_flight[s.id] = s.in_flight
                rate = round(s.requests.qps(now), 3)
                if rate:
                    qps[s.id] = rate
            report: dict[str, Any] = {}
            if outcomes:
                report["outcomes"] = outcomes
            if in_flight != self._reported_in_flight:
                report["in_flight"] = in_flight
                self._reported_in_flight = in_flight
            if qps != self._reported_qps:
                report["qps"] = qps
                self._reported_qps = qps
            if report:
                self._writer.write(encode(report))
