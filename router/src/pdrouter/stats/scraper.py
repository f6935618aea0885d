"""Scrape every engine's /health and /metrics concurrently; mark engines in or out of rotation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import aiohttp

from pdrouter.stats.engine_metrics import parse_engine_metrics
from pdrouter.stats.engine_state import EnginePool, EngineState

log = logging.getLogger(__name__)

ScrapeListener = Callable[[EngineState, bool], None]


class EngineScraper:
    """Periodic health and load probe. One round probes all engines at once, each with a timeout.

    An engine leaves rotation after `failure_threshold` failed rounds in a row and comes back on
    the first good one. `on_result(state, ok)` lets metrics observe every probe.
    """

    def __init__(
        self,
        pool: EnginePool,
        interval: float,
        timeout: float,
        failure_threshold: int,
        headers: dict[str, str] | None = None,
        on_result: ScrapeListener | None = None,
    ) -> None:
        self._pool = pool
        self._interval = interval
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._threshold = failure_threshold
        self._headers = headers or {}
        self._on_result = on_result
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=self._timeout,
            connector=aiohttp.TCPConnector(limit=0, enable_cleanup_closed=True),
        )
        await self.scrape_all()
        self._task = asyncio.create_task(self._loop(), name="engine-scraper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()

    def poke(self) -> None:
        """Run a round now (new engines were discovered)."""
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._interval)
            self._wake.clear()
            try:
                await self.scrape_all()
                self._pool.prune_stats()
            except Exception:  # a bug here must not stop health checking forever
                log.exception("engine scrape round failed")

    async def scrape_all(self) -> None:
        states = self._pool.all()
        if states:
            await asyncio.gather(*(self._scrape(s) for s in states))

    async def _scrape(self, state: EngineState) -> None:
        assert self._session is not None
        url = state.endpoint.url
        ok = False
        error = ""
        try:
            async with self._session.get(url + "/health", headers=self._headers) as health:
                await health.read()
                if health.status != 200:
                    error = f"/health answered {health.status}"
            if not error:
                async with self._session.get(url + "/metrics", headers=self._headers) as resp:
                    text = await resp.text()
                    if resp.status != 200:
                        error = f"/metrics answered {resp.status}"
                    else:
                        state.metrics = parse_engine_metrics(text)
                        ok = True
        except TimeoutError:
            error = "timed out"
        except aiohttp.ClientError as exc:
            error = f"{type(exc).__name__}: {exc}"
        self._record(state, ok, error)

    def _record(self, state: EngineState, ok: bool, error: str) -> None:
        state.probed = True
        if ok:
            if not state.healthy:
                log.info("engine %s is healthy again", state.endpoint.display_name)
                # Failures from before the outage say nothing about the engine that came back.
                state.breaker.record_success()
            state.healthy = True
            state.consecutive_failures = 0
            state.last_scrape_error = ""
        else:
            state.consecutive_failures += 1
            state.last_scrape_error = error
            if state.healthy and state.consecutive_failures >= self._threshold:
                state.healthy = False
                log.warning(
                    "engine %s out of rotation after %d failed probes: %s",
                    state.endpoint.display_name,
                    state.consecutive_failures,
                    error,
                )
        if self._on_result is not None:
            self._on_result(state, ok)
