"""The router's live view of every engine: discovery + health + load + breaker, in one pool."""

from __future__ import annotations

import time
from collections.abc import Iterable

from pdrouter.discovery.endpoint import Endpoint, Role
from pdrouter.stats.breaker import CircuitBreaker
from pdrouter.stats.engine_metrics import EngineMetrics
from pdrouter.stats.request_stats import RequestStats


class EngineState:
    """Mutable state of one engine. Scheduling reads it; stats and proxy update it."""

    __slots__ = (
        "breaker",
        "consecutive_failures",
        "endpoint",
        "failures_total",
        "healthy",
        "in_flight",
        "last_scrape_error",
        "metrics",
        "peer_breaker_open",
        "peer_in_flight",
        "probed",
        "requests",
        "successes_total",
    )

    def __init__(self, endpoint: Endpoint, breaker: CircuitBreaker, stats_window: float) -> None:
        self.endpoint = endpoint
        self.breaker = breaker
        self.metrics = EngineMetrics()
        self.healthy = True  # optimistic until the first probe: discovery said it was ready
        self.probed = False
        self.consecutive_failures = 0
        self.last_scrape_error = ""
        self.in_flight = 0
        self.requests = RequestStats(stats_window)
        # Multi-worker mode: what the other worker processes contribute (see pdrouter.workers).
        self.peer_in_flight = 0
        self.peer_breaker_open = False
        self.failures_total = 0
        self.successes_total = 0

    @property
    def id(self) -> str:
        return self.endpoint.id

    @property
    def routable(self) -> bool:
        return self.healthy and not self.peer_breaker_open and self.breaker.allows()

    def record_failure(self) -> bool:
        """Charge a failure to this engine's breaker; True if that opened it."""
        self.failures_total += 1
        return self.breaker.record_failure()

    def record_success(self) -> None:
        self.successes_total += 1
        self.breaker.record_success()

    @property
    def load(self) -> float:
        """Queue depth as the router sees it: its own in-flight plus the engine's waiting queue."""
        return self.in_flight + self.peer_in_flight + self.metrics.waiting


class EnginePool:
    """All known engines keyed by endpoint id; replaced wholesale on each discovery change."""

    def __init__(
        self, breaker_threshold: int, breaker_cooldown: float, stats_window: float
    ) -> None:
        self._breaker_threshold = breaker_threshold
        self._breaker_cooldown = breaker_cooldown
        self._stats_window = stats_window
        self._states: dict[str, EngineState] = {}
        self._by_model: dict[str, tuple[EngineState, ...]] = {}
        self.generation = 0

    def update(self, endpoints: Iterable[Endpoint]) -> tuple[list[EngineState], list[EngineState]]:
        """Apply a new endpoint set; keeps state of engines that stay. Returns (added, removed)."""
        new: dict[str, EngineState] = {}
        added: list[EngineState] = []
        for ep in endpoints:
            old = self._states.get(ep.id)
            if old is not None and old.endpoint == ep:
                new[ep.id] = old
                continue
            state = EngineState(
                ep,
                CircuitBreaker(self._breaker_threshold, self._breaker_cooldown),
                self._stats_window,
            )
            if old is not None:  # same engine, changed metadata: keep what we learned
                state.metrics, state.healthy, state.probed = old.metrics, old.healthy, old.probed
                state.in_flight, state.requests = old.in_flight, old.requests
                state.breaker = old.breaker
            else:
                added.append(state)
            new[ep.id] = state
        removed = [s for key, s in self._states.items() if key not in new]
        self._states = new
        by_model: dict[str, list[EngineState]] = {}
        for state in new.values():
            by_model.setdefault(state.endpoint.model, []).append(state)
        self._by_model = {m: tuple(v) for m, v in by_model.items()}
        self.generation += 1
        return added, removed

    def get(self, engine_id: str) -> EngineState | None:
        return self._states.get(engine_id)

    def all(self) -> tuple[EngineState, ...]:
        return tuple(self._states.values())

    def models(self) -> list[str]:
        return sorted(self._by_model)

    def for_model(self, model: str) -> tuple[EngineState, ...]:
        return self._by_model.get(model, ())

    def has_role(self, model: str, role: Role) -> bool:
        return any(s.endpoint.role is role for s in self.for_model(model))

    def prune_stats(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for state in self._states.values():
            state.requests.prune(now)
