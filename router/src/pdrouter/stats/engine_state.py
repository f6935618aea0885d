"""The router's live view of every engine: discovery + health + load + breaker, in one pool.

Health, load and the breaker are separate signals. Health comes from `/health` probes; load
from `/metrics` scrapes while they are fresh, else from the router's own in-flight count; the
breaker from request outcomes. An engine is routable when it is healthy and its breaker allows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pdrouter.discovery.endpoint import Endpoint, Role
from pdrouter.stats.breaker import Breaker, BreakerState
from pdrouter.stats.engine_metrics import EngineMetrics
from pdrouter.stats.request_stats import RequestStats

BreakerFactory = Callable[[], Breaker]


@dataclass(frozen=True, slots=True)
class EngineView:
    """What `/engines` and the engine gauges show. With --workers N every worker shows the
    control plane's view, so the answer does not depend on which worker serves it."""

    healthy: bool
    breaker: BreakerState
    in_flight: int  # all workers
    qps: float  # all workers
    recent_failures: int
    load_source: str  # "engine" (fresh /metrics) or "router" (in-flight counts only)
    metrics: EngineMetrics
    last_error: str


class EngineState:
    """Mutable state of one engine: one object per engine id for as long as the router knows
    the engine. Scheduling reads it; stats and proxy update it in place."""

    __slots__ = (
        "breaker",
        "consecutive_failures",
        "endpoint",
        "failures_total",
        "healthy",
        "in_flight",
        "last_scrape_error",
        "load_fresh",
        "metrics",
        "metrics_at",
        "peer_in_flight",
        "probed",
        "published",
        "recent_failures",
        "requests",
        "successes_total",
    )

    def __init__(self, endpoint: Endpoint, breaker: Breaker, stats_window: float) -> None:
        self.endpoint = endpoint
        self.breaker = breaker
        self.metrics = EngineMetrics()
        self.metrics_at = 0.0  # monotonic time of the last good /metrics scrape
        self.load_fresh = False  # metrics recent enough to rank by; else in-flight alone
        self.healthy = True  # optimistic until the first probe: discovery said it was ready
        self.probed = False
        self.consecutive_failures = 0  # failed /health probes in a row
        self.last_scrape_error = ""
        self.in_flight = 0
        self.requests = RequestStats(stats_window)
        # Request failures within the failure window: they count as load, so an engine that
        # fails fast does not look idle and attract traffic.
        self.recent_failures = 0
        # Multi-worker mode: what the other worker processes contribute (see pdrouter.workers).
        self.peer_in_flight = 0
        self.failures_total = 0
        self.successes_total = 0
        self.published: EngineView | None = None  # a worker: the control plane's view

    @property
    def id(self) -> str:
        return self.endpoint.id

    @property
    def routable(self) -> bool:
        """A new request may go here now (a half-open breaker with free trial slots allows)."""
        return self.healthy and self.breaker.allows()

    @property
    def in_service(self) -> bool:
        """Healthy and not shut out by an open breaker: what /ready and /v1/models report
        (a half-open engine is in service even while its trial slots are taken)."""
        return self.healthy and self.breaker.state is not BreakerState.OPEN

    def record_failure(self, token: int = 0) -> bool:
        """Charge a failure to this engine; True if that opened its breaker."""
        self.failures_total += 1
        self.recent_failures += 1
        self.requests.on_failure(time.monotonic())
        return self.breaker.record_failure(token)

    def record_success(self, token: int = 0) -> None:
        self.successes_total += 1
        self.breaker.record_success(token)

    @property
    def active(self) -> int:
        """Requests the router has on this engine (all workers) plus recent failures."""
        return self.in_flight + self.peer_in_flight + self.recent_failures

    @property
    def load(self) -> float:
        """Queue depth as the router sees it: its own in-flight plus the engine's waiting queue
        (zero when the scrape is stale) plus recent failures."""
        return self.active + self.metrics.waiting

    @property
    def load_source(self) -> str:
        return "engine" if self.load_fresh else "router"

    def view(self, now: float) -> EngineView:
        if self.published is not None:
            return self.published
        return EngineView(
            healthy=self.healthy,
            breaker=self.breaker.state,
            in_flight=self.in_flight + self.peer_in_flight,
            qps=self.requests.qps(now),
            recent_failures=self.recent_failures,
            load_source=self.load_source,
            metrics=self.metrics,
            last_error=self.last_scrape_error,
        )


class EnginePool:
    """All known engines keyed by endpoint id. A discovery change updates states in place, so
    calls in flight keep accounting on the same object whatever discovery says meanwhile."""

    def __init__(self, new_breaker: BreakerFactory, stats_window: float) -> None:
        self._new_breaker = new_breaker
        self._stats_window = stats_window
        self._states: dict[str, EngineState] = {}
        # Engines discovery dropped while calls were still on them: if the engine comes back
        # (a readiness flap), it gets the same state, counts included.
        self._retired: dict[str, EngineState] = {}
        self._by_model: dict[str, tuple[EngineState, ...]] = {}

    def update(self, endpoints: Iterable[Endpoint]) -> tuple[list[EngineState], list[EngineState]]:
        """Apply a new endpoint set. Returns (added, removed)."""
        new: dict[str, EngineState] = {}
        added: list[EngineState] = []
        for ep in endpoints:
            state = self._states.get(ep.id)
            if state is None:
                state = self._retired.pop(ep.id, None)
                if state is None:
                    state = EngineState(ep, self._new_breaker(), self._stats_window)
                added.append(state)
            state.endpoint = ep  # labels, role or model may change; the engine stays the same
            new[ep.id] = state
        removed = [s for key, s in self._states.items() if key not in new]
        self._retired = {k: s for k, s in self._retired.items() if s.in_flight > 0}
        self._retired.update((s.id, s) for s in removed if s.in_flight > 0)
        self._states = new
        by_model: dict[str, list[EngineState]] = {}
        for state in new.values():
            by_model.setdefault(state.endpoint.model, []).append(state)
        self._by_model = {m: tuple(v) for m, v in by_model.items()}
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

    def prune_stats(self, failure_window: float, now: float | None = None) -> None:
        """Drop old samples; recount recent failures over `failure_window` seconds."""
        now = time.monotonic() if now is None else now
        for state in self._states.values():
            state.requests.prune(now)
            state.recent_failures = state.requests.failures_since(now - failure_window)
