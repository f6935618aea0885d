"""Probe every engine: `/health` decides rotation, `/metrics` feeds load. Separate signals.

A round probes every engine's `/health` at once, each with the health timeout. `/metrics` is
fetched alongside with its own (longer) timeout and never holds up a round or touches health:
vLLM serves it on the API-server loop, which stalls under load while inference is fine. When
no good scrape is newer than `metrics_max_age`, an engine's load falls back to the router's own
in-flight count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from pdrouter.stats.engine_metrics import EngineMetrics, parse_engine_metrics
from pdrouter.stats.engine_state import EnginePool, EngineState

log = logging.getLogger(__name__)

# (engine, probe, outcome): probe is "health" or "metrics"; outcome "ok", "error", "timeout".
ProbeListener = Callable[[EngineState, str, str], None]


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    interval: float  # seconds between rounds
    health_timeout: float
    failure_threshold: int  # failed /health probes in a row that take an engine out
    metrics_timeout: float
    metrics_max_age: float  # older load figures are not used for ranking
    failure_window: float  # request failures this recent count as load


class EngineScraper:
    """Periodic health and load probes of the engines in one pool (the pool's owner runs it:
    the single process, or the control plane with --workers N)."""

    def __init__(
        self,
        pool: EnginePool,
        settings: ProbeSettings,
        headers: dict[str, str] | None = None,
        on_probe: ProbeListener | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._headers = headers or {}
        self._on_probe = on_probe
        self._ssl = ssl_context
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._metrics_tasks: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=0, enable_cleanup_closed=True, ssl=self._ssl if self._ssl else True
            ),
        )
        await self.scrape_all()
        # Start with load figures where /metrics answers quickly; a slow one does not hold
        # the start up longer than a health probe may take.
        if self._metrics_tasks:
            await asyncio.wait(
                list(self._metrics_tasks.values()), timeout=self._settings.health_timeout
            )
        self._task = asyncio.create_task(self._loop(), name="engine-scraper")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._metrics_tasks.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()

    def poke(self) -> None:
        """Run a round now (new engines were discovered)."""
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._settings.interval)
            self._wake.clear()
            try:
                await self.scrape_all()
                self._pool.prune_stats(self._settings.failure_window)
            except Exception:  # a bug here must not stop health checking forever
                log.exception("engine scrape round failed")

    async def scrape_all(self) -> None:
        states = self._pool.all()
        now = time.monotonic()
        for state in states:
            self._expire_load(state, now)
            if state.id not in self._metrics_tasks:  # the last one may still be running
                self._metrics_tasks[state.id] = asyncio.create_task(self._scrape_metrics(state))
        if states:
            await asyncio.gather(*(self._probe_health(s) for s in states))

    async def _get(self, state: EngineState, path: str, timeout: float) -> tuple[int, bytes]:
        assert self._session is not None
        async with self._session.get(
            state.endpoint.url + path,
            headers=self._headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            return resp.status, await resp.read()

    async def _probe_health(self, state: EngineState) -> None:
        error, outcome = "", "ok"
        try:
            status, _ = await self._get(state, "/health", self._settings.health_timeout)
            if status != 200:
                error, outcome = f"/health answered {status}", "error"
        except TimeoutError:
            error, outcome = "/health timed out", "timeout"
        except aiohttp.ClientError as exc:
            error, outcome = f"/health: {type(exc).__name__}: {exc}", "error"
        self._record_health(state, error)
        if self._on_probe is not None:
            self._on_probe(state, "health", outcome)

    async def _scrape_metrics(self, state: EngineState) -> None:
        try:
            await self._fetch_metrics(state)
        finally:
            self._metrics_tasks.pop(state.id, None)

    async def _fetch_metrics(self, state: EngineState) -> None:
        outcome = "ok"
        try:
            status, body = await self._get(state, "/metrics", self._settings.metrics_timeout)
            if status == 200:
                state.metrics = parse_engine_metrics(body.decode("utf-8", "replace"))
                state.metrics_at = time.monotonic()
                state.load_fresh = True
            else:
                outcome = "error"
        except TimeoutError:
            outcome = "timeout"
        except aiohttp.ClientError:
            outcome = "error"
        if self._on_probe is not None:
            self._on_probe(state, "metrics", outcome)

    def _expire_load(self, state: EngineState, now: float) -> None:
        if state.load_fresh and now - state.metrics_at > self._settings.metrics_max_age:
            log.info(
                "engine %s: no /metrics for %.0fs; ranking it by the router's in-flight count",
                state.endpoint.display_name,
                now - state.metrics_at,
            )
            state.metrics = EngineMetrics()
            state.load_fresh = False

    def _record_health(self, state: EngineState, error: str) -> None:
        state.probed = True
        breaker = state.breaker
        if not error:
            if not state.healthy:
                log.info("engine %s is healthy again", state.endpoint.display_name)
                # Failures from before the outage say nothing about the engine that came back.
                breaker.close()
            else:
                breaker.probe_ok()  # after the cooldown, a good probe closes the breaker
            state.healthy = True
            state.consecutive_failures = 0
            state.last_scrape_error = ""
            return
        state.consecutive_failures += 1
        state.last_scrape_error = error
        if state.healthy and state.consecutive_failures >= self._settings.failure_threshold:
            state.healthy = False
            log.warning(
                "engine %s out of rotation after %d failed probes: %s",
                state.endpoint.display_name,
                state.consecutive_failures,
                error,
            )
