"""The main process's side: discovery, scraping and aggregate breakers, served to workers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any

import orjson

from pdrouter.api.state import build_discovery
from pdrouter.config import RouterSettings
from pdrouter.discovery.endpoint import Endpoint
from pdrouter.kvcache.hashing import BlockHasher
from pdrouter.kvcache.index import KvBlockIndex
from pdrouter.kvcache.subscriber import KvEventSubscriber, followed_roles
from pdrouter.stats.engine_state import EnginePool
from pdrouter.stats.scraper import EngineScraper
from pdrouter.workers.kv_feed import KvFanout, stats_message
from pdrouter.workers.protocol import encode, endpoint_to_wire

log = logging.getLogger(__name__)
BROADCAST_INTERVAL = 0.1  # seconds between state broadcasts while anything changes


class ControlPlane:
    """Runs in a thread of the main process with its own event loop."""

    def __init__(self, settings: RouterSettings, socket_path: str) -> None:
        self.settings = settings
        self.socket_path = socket_path
        self.pool = EnginePool(
            settings.breaker_failure_threshold,
            settings.breaker_cooldown,
            settings.request_stats_window,
        )
        self._writers: dict[int, asyncio.StreamWriter] = {}
        self._in_flight: dict[int, dict[str, int]] = {}  # worker -> engine id -> in flight
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
        scraper = EngineScraper(
            self.pool,
            self.settings.engine_scrape_interval,
            self.settings.engine_scrape_timeout,
            self.settings.health_failure_threshold,
        )
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
        self._writers[key] = writer
        writer.write(self._endpoints_msg + self._stats_msg())
        if self._kv_fanout is not None:
            writer.write(self._kv_fanout.snapshot())
        try:
            while line := await reader.readline():
                self._on_report(key, orjson.loads(line))
        except (ConnectionError, orjson.JSONDecodeError):
            log.warning("a worker's control connection broke")
        finally:
            self._writers.pop(key, None)
            self._in_flight.pop(key, None)
            writer.close()

    def _on_report(self, worker: int, report: dict[str, Any]) -> None:
        for engine_id, (failures, successes) in report.get("outcomes", {}).items():
            state = self.pool.get(engine_id)
            if state is None:
                continue
            for _ in range(failures):
                state.record_failure()
            if successes and not failures:
                state.record_success()
        if "in_flight" in report:
            self._in_flight[worker] = report["in_flight"]

    def _stats_msg(self) -> bytes:
        totals: dict[str, int] = {}
        for per_worker in self._in_flight.values():
            for engine_id, n in per_worker.items():
                totals[engine_id] = totals.get(engine_id, 0) + n
        engines = {}
        for s in self.pool.all():
            m = s.metrics
            engines[s.id] = {
                "healthy": s.healthy,
                "probed": s.probed,
                "err": s.last_scrape_error,
                "open": not s.breaker.allows(),
                "in_flight": totals.get(s.id, 0),
                "m": [
                    m.running,
                    m.waiting,
                    m.kv_cache_usage,
                    m.prefix_cache_queries,
                    m.prefix_cache_hits,
                ],
            }
        return encode({"t": "stats", "engines": engines})

    def _broadcast(self, message: bytes) -> None:
        for writer in list(self._writers.values()):
            with contextlib.suppress(ConnectionError, RuntimeError):
                writer.write(message)

    async def _tick(self) -> None:
        last = b""
        while True:
            await asyncio.sleep(BROADCAST_INTERVAL)
            message = self._stats_msg()
            if self.kv is not None:
                message += stats_message(self.kv.stats)
            if message != last:
                self._broadcast(message)
                last = message
