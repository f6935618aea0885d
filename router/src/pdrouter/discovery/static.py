"""Static discovery: a fixed list of engines given on the command line."""

from __future__ import annotations

from pdrouter.discovery.base import EndpointsListener
from pdrouter.discovery.endpoint import Endpoint, Role


def _ports(spec: str) -> tuple[int, ...]:
    # Per-backend port lists use ';' because ',' already separates backends.
    return tuple(int(p) for p in spec.replace(" ", "").split(";") if p)


def _port(spec: str) -> int | None:
    return int(spec) if spec.strip() else None


def parse_static_endpoints(
    backends: list[str],
    models: list[str],
    roles: list[str] | None = None,
    init_ports: list[str] | None = None,
    alloc_ports: list[str] | None = None,
    kv_events_ports: list[str] | None = None,
    kv_events_replay_ports: list[str] | None = None,
) -> tuple[Endpoint, ...]:
    """Build endpoints from the parallel lists of the static flags (already length-checked)."""
    endpoints = []
    for i, url in enumerate(backends):
        role = Role.parse(roles[i]) if roles else Role.BOTH
        endpoints.append(
            Endpoint(
                id=url,
                url=url,
                model=models[i],
                role=role,
                name=url.split("://", 1)[-1],
                lmcache_init_ports=_ports(init_ports[i]) if init_ports else (),
                lmcache_alloc_ports=_ports(alloc_ports[i]) if alloc_ports else (),
                kv_events_port=_port(kv_events_ports[i]) if kv_events_ports else None,
                kv_events_replay_port=(
                    _port(kv_events_replay_ports[i]) if kv_events_replay_ports else None
                ),
            )
        )
    return tuple(endpoints)


class StaticDiscovery:
    """Discovery over a fixed set; health checks still decide which of them get traffic."""

    def __init__(self, endpoints: tuple[Endpoint, ...]) -> None:
        self._endpoints = endpoints

    async def start(self, on_change: EndpointsListener) -> None:
        on_change(self._endpoints)

    async def stop(self) -> None:
        return None

    def endpoints(self) -> tuple[Endpoint, ...]:
        return self._endpoints
