"""Mutable state of one fake engine process, shared by the inference and admin handlers."""

from __future__ import annotations

import asyncio
import copy
from collections import deque
from typing import Any

import aiohttp

from .faults import FaultBoard
from .knobs import Knobs
from .kv import LmcacheNotifier, NixlKvStore
from .stats import EngineCounters, RequestLog, render_metrics
from .textgen import PrefixCache


class EngineState:
    """Knobs, faults, counters, prefix cache, held KV and the running-slot queue."""

    def __init__(self, knobs: Knobs) -> None:
        self.startup_knobs = copy.deepcopy(knobs)
        self.knobs = knobs
        self.port = 0
        self.board = FaultBoard(knobs.faults)
        self.counters = EngineCounters()
        self.log = RequestLog()
        self.prefix = PrefixCache(knobs.kv_capacity_tokens // knobs.block_size)
        self.nixl = NixlKvStore()
        self.notifier = LmcacheNotifier()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._session: aiohttp.ClientSession | None = None

    # -- configuration -------------------------------------------------------------------
    def apply(self, changes: dict[str, Any]) -> None:
        """Apply live config changes (validated first; raises ValueError)."""
        new = self.knobs.updated(changes)
        self.knobs = new
        if "faults" in changes:
            self.board.load(new.faults)
        if "kv_capacity_tokens" in changes or "block_size" in changes:
            self.prefix.capacity = max(1, new.kv_capacity_tokens // new.block_size)
        self._wake()

    def config_json(self) -> dict[str, Any]:
        out = self.knobs.to_json()
        out["faults"] = self.board.snapshot()
        out["port"] = self.port
        return out

    def reset(self) -> None:
        """Back to the startup knobs, with empty counters, log, caches and held KV."""
        self.knobs = copy.deepcopy(self.startup_knobs)
        self.board.load(self.knobs.faults)
        running, waiting, tokens = (
            self.counters.running,
            self.counters.waiting,
            self.counters.running_tokens,
        )
        self.counters = EngineCounters(running=running, waiting=waiting, running_tokens=tokens)
        self.log = RequestLog()
        self.prefix = PrefixCache(self.knobs.kv_capacity_tokens // self.knobs.block_size)
        self.nixl.clear()
        self._wake()

    # -- running slots (max_num_seqs) ----------------------------------------------------
    async def acquire_slot(self) -> None:
        c = self.counters
        if c.running >= self.knobs.max_num_seqs:
            c.waiting += 1
            try:
                while c.running >= self.knobs.max_num_seqs:
                    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                    self._waiters.append(fut)
                    await fut
            finally:
                c.waiting -= 1
        c.running += 1

    def release_slot(self) -> None:
        self.counters.running -= 1
        self._wake()

    def _wake(self) -> None:
        free = self.knobs.max_num_seqs - self.counters.running
        while self._waiters and free > 0:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                free -= 1

    # -- outputs -------------------------------------------------------------------------
    def metrics(self) -> bytes:
        k = self.knobs
        return render_metrics(
            self.counters,
            model=k.models[0],
            legacy=k.legacy_metrics,
            kv_usage=min(1.0, self.counters.running_tokens / max(1, k.kv_capacity_tokens)),
            kv_held=self.nixl.held_count(),
            override=k.metrics_override,
        )

    def stats_json(self) -> dict[str, Any]:
        out = self.log.to_json()
        c = self.counters
        out.update(
            running=c.running,
            waiting=c.waiting,
            kv_held=self.nixl.held_count(),
            kv_expired=self.nixl.expired,
            lmcache_notifications_sent=self.notifier.sent,
            prefix_cache_hits=c.prefix_hits,
            external_prefix_cache_hits=c.external_hits,
            engine_id=self.knobs.engine_id,
            port=self.port,
        )
        return out

    def session(self) -> aiohttp.ClientSession:
        """HTTP client for decode-side KV pulls (created lazily inside the loop)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        self.notifier.close()
