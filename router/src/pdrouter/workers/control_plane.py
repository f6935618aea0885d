"""The main process's side: discovery, probes and the breakers, served to workers.

The control plane is the single owner of engine state with --workers N: it runs discovery and
the health/load probes, holds each engine's circuit breaker, and sums the workers' in-flight
counts and request rates. Every worker routes by, and shows, the same figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import orjson
import prometheus_client.values

from pdrouter.api.state import breaker_policy, build_discovery, build_scraper
from pdrouter.config import RouterSettings
from pdrouter.discovery.endpoint import Endpoint
from pdrouter.kvcache.hashing import BlockHasher
from pdrouter.kvcache.index import KvBlockIndex
from pdrouter.kvcache.subscriber import KvEventSubscriber, followed_roles
from pdrouter.stats.breaker import BreakerState, CircuitBreaker
from pdrouter.stats.engine_state import EnginePool, EngineState
from pdrouter.stats.router_metrics import RouterMetrics
from pdrouter.workers.follower_breaker import OutcomeTally
from pdrouter.workers.kv_feed import KvFanout, stats_message
from pdrouter.workers.protocol import encode, endpoint_to_wire

log = logging.getLogger(__name__)
BROADCAST_INTERVAL = 0.1  # seconds between state broadcasts while anything changes


@dataclass
class _Worker:
    """One connected worker process."""

    writer: asyncio.StreamWriter
    in_flight: dict[str, int] = field(default_factory=dict)
    qps: dict[str, float] = field(default_factory=dict)
    last: bytes = b""  # the last stats message it got


def trial_share(probes: int, workers: int, index: int, episode: int) -> int:
    """Worker `index`'s share of a half-open episode's trial slots; the remainder rotates with
    the episode so no worker is always left out."""
    base, rest = divmod(probes, workers)
    return base + (1 if (index - episode) % workers < rest else 0)


class ControlPlane:
    """Runs in a thread of the main process with its own event loop."""

    def __init__(self, settings: RouterSettings, socket_path: str) -> None:
        if prometheus_client.values.ValueClass is prometheus_client.values.MutexValue:
            raise RuntimeError("set PROMETHEUS_MULTIPROC_DIR before prometheus_client is imported")
        self.settings = settings
        self.socket_path = socket_path
        policy = breaker_policy(settings)
        self._probes = policy.half_open_probes
        self.pool = EnginePool(lambda: CircuitBreaker(policy), settings.request_stats_window)
        self._workers: dict[int, _Worker] = {}
        self._endpoints_msg = encode({"t": "endpoints", "endpoints": []})
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.kv: KvEventSubscriber | None = None
        self._kv_fanout: KvFanout | None = None
        if settings.kv_events:
            self._kv_fanout = KvFanout(KvBlockIndex(settings.kv_index_max_blocks), self._broadcast)
            hasher = BlockHasher(
                settings.kv_hash_algo, settings.kv_block_size, settings.kv_hash_seed
            )
            self.kv = KvEventSubscriber(self._kv_fanout, hasher, followed_roles(settings))

    # --- thread lifecycle -------------------------------------------------------------------
    def start_in_thread(self, timeout: float = 30.0) -> None:
        self._thread = threading.Thread(target=self._run_thread, name="control-plane", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("control plane did not start")
        if self._error is not None:
            raise RuntimeError(f"control plane failed: {self._error}")

    def stop(self) -> None:
        loop, stop = getattr(self, "_loop", None), self._stop
        if loop is not None and stop is not None:
            loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def _run_thread(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced to the main thread through start_in_thread
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        discovery = build_discovery(self.settings)
        # Probe counts go to the multiprocess metrics directory, so workers' /metrics show them.
        metrics = RouterMetrics(self.pool, self.settings.request_stats_window)
        scraper = build_scraper(self.settings, self.pool, metrics)
        server = await asyncio.start_unix_server(self._serve, path=self.socket_path)

        def on_change(endpoints: tuple[Endpoint, ...]) -> None:
            added, _ = self.pool.update(endpoints)
            self._endpoints_msg = encode(
                {"t": "endpoints", "endpoints": [endpoint_to_wire(e) for e in endpoints]}
            )
            self._broadcast(self._endpoints_msg)
            if added:
                scraper.poke()
            if self.kv is not None:
                self.kv.update(endpoints)

        if self.kv is not None:
            await self.kv.start()
        await discovery.start(on_change)
        await scraper.start()
        ticker = asyncio.create_task(self._tick())
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            ticker.cancel()
            server.close()
            await scraper.stop()
            await discovery.stop()
            if self.kv is not None:
                await self.kv.stop()

    # --- workers ----------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        key = id(writer)
        worker = self._workers[key] = _Worker(writer)
        writer.write(self._endpoints_msg + self._stats_msg(worker))
        if self._kv_fanout is not None:
            writer.write(self._kv_fanout.snapshot())
        try:
            while line := await reader.readline():
                self._on_report(worker, orjson.loads(line))
        except (ConnectionError, orjson.JSONDecodeError):
            log.warning("a worker's control connection broke")
        finally:
            self._workers.pop(key, None)
            writer.close()

    def _on_report(self, worker: _Worker, report: dict[str, Any]) -> None:
        changed = False
        for engine_id, wire in report.get("outcomes", {}).items():
            state = self.pool.get(engine_id)
            if state is not None:
                before = state.breaker.state
                replay(state, OutcomeTally.from_wire(wire))
                changed |= state.breaker.state is not before
        if "in_flight" in report:
            worker.in_flight = report["in_flight"]
        if "qps" in report:
            worker.qps = report["qps"]
        if changed:  # a breaker opened or closed: tell every worker now, not at the next tick
            self._push()

    def _stats_msg(self, worker: _Worker) -> bytes:
        in_flight: dict[str, int] = {}
        qps: dict[str, float] = {}
        for w in self._workers.values():
            for engine_id, n in w.in_flight.items():
                in_flight[engine_id] = in_flight.get(engine_id, 0) + n
            for engine_id, rate in w.qps.items():
                qps[engine_id] = qps.get(engine_id, 0.0) + rate
        order = sorted(self._workers)
        index = order.index(id(worker.writer)) if id(worker.writer) in order else 0
        engines: dict[str, Any] = {}
        slots: dict[str, int] = {}
        for s in self.pool.all():
            breaker = s.breaker
            assert isinstance(breaker, CircuitBreaker)
            state = breaker.state
            if state is BreakerState.HALF_OPEN:
                slots[s.id] = trial_share(self._probes, len(order) or 1, index, breaker.episode)
            s.peer_in_flight = in_flight.get(s.id, 0)
            m = s.metrics
            engines[s.id] = {
                "h": s.healthy,
                "p": s.probed,
                "e": s.last_scrape_error,
                "f": s.load_fresh,
                "m": [
                    m.running,
                    m.waiting,
                    m.kv_cache_usage,
                    m.prefix_cache_queries,
                    m.prefix_cache_hits,
                ],
                "b": [int(state), breaker.episode],
                "i": s.peer_in_flight,
                "q": round(qps.get(s.id, 0.0), 3),
                "r": s.recent_failures,
            }
        return encode({"t": "stats", "engines": engines, "slots": slots})

    def _broadcast(self, message: bytes) -> None:
        for worker in list(self._workers.values()):
            with contextlib.suppress(ConnectionError, RuntimeError):
                worker.writer.write(message)

    def _push(self) -> None:
        """Send each worker its stats message if it changed."""
        for worker in list(self._workers.values()):
            message = self._stats_msg(worker)
            if message != worker.last:
                worker.last = message
                with contextlib.suppress(ConnectionError, RuntimeError):
                    worker.writer.write(message)

    async def _tick(self) -> None:
        last_kv = b""
        while True:
            await asyncio.sleep(BROADCAST_INTERVAL)
            self._push()
            if self.kv is not None:
                kv_stats = stats_message(self.kv.stats)
                if kv_stats != last_kv:
                    self._broadcast(kv_stats)
                    last_kv = kv_stats


def replay(state: EngineState, tally: OutcomeTally) -> None:
    """Apply a worker's outcomes to the engine's breaker in the order they happened."""
    for _ in range(tally.lead):
        state.record_failure(0)
    if tally.success:
        state.record_success(0)
    for _ in range(tally.tail):
        state.record_failure(0)
    for _ in range(tally.trial_ok):
        state.record_success(tally.episode)
    for _ in range(tally.trial_failed):
        state.record_failure(tally.episode)
