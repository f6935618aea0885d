"""A worker's side: engines and their health come from the control plane, not from scraping."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson

from pdrouter.discovery.base import EndpointsListener
from pdrouter.discovery.endpoint import Endpoint
from pdrouter.kvcache.index import KvBlockIndex
from pdrouter.kvcache.subscriber import StreamStats
from pdrouter.stats.engine_metrics import EngineMetrics
from pdrouter.stats.engine_state import EnginePool
from pdrouter.workers.kv_feed import apply_message
from pdrouter.workers.protocol import encode, endpoint_from_wire

log = logging.getLogger(__name__)
REPORT_INTERVAL = 0.1


class ControlPlaneFollower:
    """Implements the Discovery interface for a worker, and mirrors the control plane's health,
    load and breaker state into the worker's pool; reports this worker's outcomes back."""

    def __init__(
        self,
        socket_path: str,
        pool: EnginePool,
        kv_index: KvBlockIndex | None = None,
        kv_stats: StreamStats | None = None,
    ) -> None:
        self.socket_path = socket_path
        self.pool = pool
        self.kv_index = kv_index
        self.kv_stats = kv_stats or StreamStats()
        self._endpoints: tuple[Endpoint, ...] = ()
        self._tasks: list[asyncio.Task[None]] = []
        self._writer: asyncio.StreamWriter | None = None
        self._sent: dict[str, tuple[int, int]] = {}
        self._reported_in_flight: dict[str, int] = {}

    async def start(self, on_change: EndpointsListener) -> None:
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
        for engine_id, info in message.get("engines", {}).items():
            state = self.pool.get(engine_id)
            if state is None:
                continue
            state.healthy = info["healthy"]
            state.probed = info["probed"]
            state.last_scrape_error = info["err"]
            state.metrics = EngineMetrics(*info["m"])
            state.peer_breaker_open = info["open"]
            own = self._reported_in_flight.get(engine_id, 0)
            state.peer_in_flight = max(info["in_flight"] - own, 0)

    async def _report(self) -> None:
        assert self._writer is not None
        while True:
            await asyncio.sleep(REPORT_INTERVAL)
            outcomes: dict[str, list[int]] = {}
            in_flight: dict[str, int] = {}
            for s in self.pool.all():
                sent_f, sent_s = self._sent.get(s.id, (0, 0))
                if s.failures_total != sent_f or s.successes_total != sent_s:
                    outcomes[s.id] = [s.failures_total - sent_f, s.successes_total - sent_s]
                    self._sent[s.id] = (s.failures_total, s.successes_total)
                if s.in_flight:
                    in_flight[s.id] = s.in_flight
            report: dict[str, Any] = {}
            if outcomes:
                report["outcomes"] = outcomes
            if in_flight != self._reported_in_flight:
                report["in_flight"] = in_flight
                self._reported_in_flight = in_flight
            if report:
                self._writer.write(encode(report))
