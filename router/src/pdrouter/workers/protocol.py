"""Messages between the control plane and the workers: one JSON object per line."""

from __future__ import annotations

from typing import Any

import orjson

from pdrouter.discovery.endpoint import Endpoint, Role

CONTROL_SOCKET_ENV = "PDSTACK_ROUTER_CONTROL_SOCKET"


def encode(message: dict[str, Any]) -> bytes:
    return orjson.dumps(message) + b"\n"


def endpoint_to_wire(ep: Endpoint) -> dict[str, Any]:
    return {
        "id": ep.id,
        "url": ep.url,
        "model": ep.model,
        "role": ep.role.value,
        "name": ep.name,
        "init": list(ep.lmcache_init_ports),
        "alloc": list(ep.lmcache_alloc_ports),
        "labels": [list(kv) for kv in ep.labels],
        "kv": ep.kv_events_port,
        "kvr": ep.kv_events_replay_port,
    }


def endpoint_from_wire(data: dict[str, Any]) -> Endpoint:
    return Endpoint(
        id=data["id"],
        url=data["url"],
        model=data["model"],
        role=Role(data["role"]),
        name=data.get("name", ""),
        lmcache_init_ports=tuple(data.get("init", ())),
        lmcache_alloc_ports=tuple(data.get("alloc", ())),
        labels=tuple((k, v) for k, v in data.get("labels", ())),
        kv_events_port=data.get("kv"),
        kv_events_replay_port=data.get("kvr"),
    )
