"""Pure mapping from a Kubernetes pod (its API JSON) to the engine `Endpoint` it serves.

No I/O and no client objects: the input is the pod exactly as the API server sends it
(camelCase keys), so list responses, watch events and recorded fixtures all go through here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pdrouter.discovery.endpoint import Endpoint, Role

MODEL_ANNOTATION = "pdstack.io/model"
# production-stack puts the model in a `model` label; accepted so its charts keep working.
MODEL_LABEL_FALLBACK = "model"
ROLE_LABEL = "pdstack.io/role"
PORT_ANNOTATION = "pdstack.io/port"
LMCACHE_INIT_PORTS_ANNOTATION = "pdstack.io/lmcache-init-ports"
LMCACHE_ALLOC_PORTS_ANNOTATION = "pdstack.io/lmcache-alloc-ports"
KV_EVENTS_PORT_ANNOTATION = "pdstack.io/kv-events-port"
KV_EVENTS_REPLAY_PORT_ANNOTATION = "pdstack.io/kv-events-replay-port"

_MAX_PORT = 65535


@dataclass(frozen=True, slots=True)
class PodMapping:
    """What one pod means to the router.

    Exactly one of `endpoint` / `skip_reason` is set. `warnings` name configuration mistakes
    an operator should fix (some skip the pod, some only drop an optional field).
    """

    uid: str
    name: str
    endpoint: Endpoint | None = None
    skip_reason: str | None = None
    warnings: tuple[str, ...] = ()


def map_pod(pod: Mapping[str, Any], default_port: int) -> PodMapping:
    """Map a pod to its endpoint, or say why it must not receive traffic."""
    metadata = _mapping(pod.get("metadata"))
    status = _mapping(pod.get("status"))
    uid = str(metadata.get("uid") or "")
    name = str(metadata.get("name") or "")
    labels = _str_dict(metadata.get("labels"))
    annotations = _str_dict(metadata.get("annotations"))

    not_ready = _not_ready_reason(metadata, status)
    if not_ready is not None:
        return PodMapping(uid=uid, name=name, skip_reason=not_ready)

    model = (
        annotations.get(MODEL_ANNOTATION, "").strip()
        or labels.get(MODEL_LABEL_FALLBACK, "").strip()
    )
    if not model:
        msg = f"no {MODEL_ANNOTATION} annotation or {MODEL_LABEL_FALLBACK!r} label"
        return PodMapping(uid=uid, name=name, skip_reason="no model", warnings=(msg,))

    role_text = labels.get(ROLE_LABEL)
    try:
        role = Role.BOTH if role_text is None else Role.parse(role_text)
    except ValueError as exc:
        msg = f"label {ROLE_LABEL}: {exc}"
        return PodMapping(uid=uid, name=name, skip_reason="invalid role", warnings=(msg,))

    port_text = annotations.get(PORT_ANNOTATION)
    port = default_port if port_text is None else _parse_port(port_text)
    if port is None:
        # A wrong port would send traffic to the wrong place, so the pod is left out.
        msg = f"annotation {PORT_ANNOTATION}={port_text!r} is not a port number"
        return PodMapping(uid=uid, name=name, skip_reason="invalid port", warnings=(msg,))

    warnings: list[str] = []
    init_ports = _lmcache_ports(annotations, LMCACHE_INIT_PORTS_ANNOTATION, warnings)
    alloc_ports = _lmcache_ports(annotations, LMCACHE_ALLOC_PORTS_ANNOTATION, warnings)
    kv_port = _optional_port(annotations, KV_EVENTS_PORT_ANNOTATION, warnings)
    kv_replay_port = _optional_port(annotations, KV_EVENTS_REPLAY_PORT_ANNOTATION, warnings)

    endpoint = Endpoint(
        id=uid or name,
        url=f"http://{_url_host(str(status['podIP']))}:{port}",
        model=model,
        role=role,
        name=name,
        lmcache_init_ports=init_ports,
        lmcache_alloc_ports=alloc_ports,
        labels=tuple(sorted(labels.items())),
        kv_events_port=kv_port,
        kv_events_replay_port=kv_replay_port,
    )
    return PodMapping(uid=uid, name=name, endpoint=endpoint, warnings=tuple(warnings))


def endpoint_from_pod(pod: Mapping[str, Any], default_port: int) -> Endpoint | None:
    """The pod's endpoint when it may receive traffic, else None."""
    return map_pod(pod, default_port).endpoint


def _not_ready_reason(metadata: Mapping[str, Any], status: Mapping[str, Any]) -> str | None:
    if metadata.get("deletionTimestamp"):
        return "terminating"
    phase = status.get("phase")
    if phase != "Running":
        return f"phase {phase or 'unknown'}"
    conditions = status.get("conditions")
    ready = isinstance(conditions, list) and any(
        isinstance(c, Mapping) and c.get("type") == "Ready" and c.get("status") == "True"
        for c in conditions
    )
    if not ready:
        return "not ready"
    if not status.get("podIP"):
        return "no pod IP"
    return None


def _parse_port(text: str) -> int | None:
    try:
        port = int(text.strip())
    except ValueError:
        return None
    return port if 0 < port <= _MAX_PORT else None


def _lmcache_ports(
    annotations: Mapping[str, str], key: str, warnings: list[str]
) -> tuple[int, ...]:
    text = annotations.get(key)
    if text is None or not text.strip():
        return ()
    ports = tuple(_parse_port(part) for part in text.split(","))
    if any(p is None for p in ports):
        warnings.append(f"annotation {key}={text!r} is not a comma separated list of ports")
        return ()
    return tuple(p for p in ports if p is not None)


def _optional_port(annotations: Mapping[str, str], key: str, warnings: list[str]) -> int | None:
    """An optional feature's port: a bad value disables the feature, not the pod."""
    text = annotations.get(key)
    if text is None or not text.strip():
        return None
    port = _parse_port(text)
    if port is None:
        warnings.append(f"annotation {key}={text!r} is not a port number")
    return port


def _url_host(ip: str) -> str:
    try:
        is_v6 = ipaddress.ip_address(ip).version == 6
    except ValueError:
        is_v6 = ":" in ip
    return f"[{ip}]" if is_v6 else ip


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _str_dict(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): str(v) for k, v in value.items()}
