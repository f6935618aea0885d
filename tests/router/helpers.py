"""Builders for engine states used by the socket-free unit tests."""

from __future__ import annotations

from pdrouter.discovery.endpoint import Endpoint, Role
from pdrouter.stats.breaker import BreakerPolicy, CircuitBreaker
from pdrouter.stats.engine_metrics import EngineMetrics
from pdrouter.stats.engine_state import EngineState


def engine(
    name: str,
    role: Role = Role.BOTH,
    model: str = "tiny",
    *,
    waiting: float = 0,
    running: float = 0,
    kv: float = 0.0,
    in_flight: int = 0,
    healthy: bool = True,
    init_ports: tuple[int, ...] = (),
    alloc_ports: tuple[int, ...] = (),
) -> EngineState:
    ep = Endpoint(
        id=name,
        url=f"http://{name}:8000",
        model=model,
        role=role,
        name=name,
        lmcache_init_ports=init_ports,
        lmcache_alloc_ports=alloc_ports,
    )
    state = EngineState(ep, CircuitBreaker(BreakerPolicy(failure_threshold=3, cooldown=10.0)), 60.0)
    state.metrics = EngineMetrics(running=running, waiting=waiting, kv_cache_usage=kv)
    state.in_flight = in_flight
    state.healthy = healthy
    return state
