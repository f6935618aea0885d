"""What scheduling reads of an engine: the one interface between the stats room and the rules.

Every filter and scorer reads engines through these accessors only, so a change in how the
stats room keeps its state (one object per engine id, health vs load vs breaker signals) is
absorbed here and nowhere else.
"""

from __future__ import annotations

from typing import Protocol

from pdrouter.discovery.endpoint import Endpoint
from pdrouter.stats.engine_metrics import EngineMetrics


class EngineView(Protocol):
    """A read-only view of one engine at decision time (`stats.EngineState` provides it)."""

    @property
    def id(self) -> str: ...

    @property
    def endpoint(self) -> Endpoint: ...

    @property
    def routable(self) -> bool: ...

    @property
    def load(self) -> float: ...

    @property
    def metrics(self) -> EngineMetrics: ...

    @property
    def active(self) -> int: ...


def queue(e: EngineView) -> float:
    """Requests queued for the engine: the router's in-flight (all workers) and recent failures
    + scraped waiting (zero once the scrape is stale: then in-flight alone ranks)."""
    return e.load


def running(e: EngineView) -> float:
    """Requests the engine reported running at the last scrape."""
    return e.metrics.running


def waiting(e: EngineView) -> float:
    return e.metrics.waiting


def kv_usage(e: EngineView) -> float:
    """Share of the engine's KV cache in use (0..1) at the last scrape."""
    return e.metrics.kv_cache_usage


def decode_load(e: EngineView) -> float:
    """A decode engine's concurrency: running requests plus what routers have in flight (recent
    failures count as in flight, so a fast-failing engine does not look idle)."""
    return e.metrics.running + e.active
