"""What a kubelet works out from a pod spec before it starts a container (pure functions).

Environment variables (`value` with `$(VAR)` references, `fieldRef`, `resourceFieldRef`,
`configMapKeyRef`, `secretKeyRef`, `envFrom`), the service links every container gets, and the
`$(VAR)` expansion of `command` and `args`. Anything this runner cannot honour raises
`UnsupportedSpec`, so the pod fails visibly instead of running with a silently different setup.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Json = Mapping[str, Any]
# (kind, namespace, name) -> the object's `data` (secrets already decoded), or None if absent.
DataLookup = Callable[[str, str], Mapping[str, str] | None]


class UnsupportedSpec(ValueError):
    """The pod asks for something the runner cannot do faithfully."""


@dataclass(frozen=True)
class Lookups:
    """Objects a container's env may read, fetched by the caller."""

    config_map: DataLookup
    secret: DataLookup


_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: known names are replaced, `$$` escapes, others stay."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _REF.sub(one, text)


def field_ref(pod: Json, path: str) -> str:
    """The value of a downward-API `fieldRef.fieldPath` for this pod."""
    meta = pod.get("metadata", {})
    status = pod.get("status", {})
    spec = pod.get("spec", {})
    simple: dict[str, Any] = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.hostIP": status.get("hostIP"),
        "status.podIP": status.get("podIP"),
        "status.hostIPs": ",".join(i["ip"] for i in status.get("hostIPs") or []),
        "status.podIPs": ",".join(i["ip"] for i in status.get("podIPs") or []),
    }
    if path in simple:
        return str(simple[path] or "")
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise UnsupportedSpec(f"fieldRef {path!r} is not supported")


_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_SUFFIX = {
    "": 1.0,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
}


def quantity(text: str | int | float) -> float:
    """A Kubernetes resource quantity ("500m", "4Gi", 2) as a number."""
    match = _QUANTITY.match(str(text))
    if not match or match.group(2) not in _SUFFIX:
        raise UnsupportedSpec(f"cannot read quantity {text!r}")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


def resource_field(container: Json, ref: Json, node_allocatable: Json) -> str:
    """`resourceFieldRef`: the container's limit (node allocatable when unset) or request."""
    resource = str(ref.get("resource", ""))
    kind, _, name = resource.partition(".")
    resources = container.get("resources") or {}
    value = (resources.get(kind) or {}).get(name)
    if value is None:
        value = node_allocatable.get(name) if kind == "limits" else 0
    if value is None:
        raise UnsupportedSpec(f"resourceFieldRef {resource!r}: no value")
    divisor = quantity(ref.get("divisor", "1"))
    return str(math.ceil(quantity(value) / divisor))


def service_links(services: list[Json]) -> dict[str, str]:
    """The `<NAME>_SERVICE_HOST` / `<NAME>_PORT...` variables a kubelet adds for Services."""
    env: dict[str, str] = {}
    for svc in services:
        ip = (svc.get("spec") or {}).get("clusterIP")
        ports = (svc.get("spec") or {}).get("ports") or []
        if not ip or ip == "None" or not ports:
            continue
        name = svc["metadata"]["name"].upper().replace("-", "_")
        first = ports[0]
        env[f"{name}_SERVICE_HOST"] = ip
        env[f"{name}_SERVICE_PORT"] = str(first["port"])
        env[f"{name}_PORT"] = f"{first.get('protocol', 'TCP').lower()}://{ip}:{first['port']}"
        for port in ports:
            proto = port.get("protocol", "TCP")
            prefix = f"{name}_PORT_{port['port']}_{proto}"
            env[prefix] = f"{proto.lower()}://{ip}:{port['port']}"
            env[f"{prefix}_PROTO"] = proto.lower()
            env[f"{prefix}_PORT"] = str(port["port"])
            env[f"{prefix}_ADDR"] = ip
            if port.get("name"):
                env[f"{name}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}"] = str(
                    port["port"]
                )
    return env


def container_env(
    pod: Json,
    container: Json,
    lookups: Lookups,
    base: Mapping[str, str],
    node_allocatable: Json,
) -> dict[str, str]:
    """The container's environment: `base` (service links), then envFrom, then env in order."""
    namespace = pod["metadata"]["namespace"]
    env = dict(base)
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind in ("configMapRef", "secretRef"):
            ref = source.get(kind)
            if ref is None:
                continue
            lookup = lookups.config_map if kind == "configMapRef" else lookups.secret
            data = lookup(namespace, ref["name"])
            if data is None and not ref.get("optional"):
                raise UnsupportedSpec(f"envFrom {kind} {ref['name']!r} not found")
            for key, value in (data or {}).items():
                env[prefix + key] = value
    for var in container.get("env") or []:
        name = var["name"]
        if "valueFrom" not in var:
            env[name] = expand(str(var.get("value", "")), env)
            continue
        source = var["valueFrom"]
        if "fieldRef" in source:
            env[name] = field_ref(pod, source["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in source:
            env[name] = resource_field(container, source["resourceFieldRef"], node_allocatable)
        elif "configMapKeyRef" in source or "secretKeyRef" in source:
            kind = "configMapKeyRef" if "configMapKeyRef" in source else "secretKeyRef"
            ref = source[kind]
            lookup = lookups.config_map if kind == "configMapKeyRef" else lookups.secret
            data = lookup(namespace, ref["name"])
            if data is None or ref["key"] not in data:
                if ref.get("optional"):
                    continue
                raise UnsupportedSpec(f"env {name}: {kind} {ref['name']}/{ref['key']} not found")
            env[name] = data[ref["key"]]
        else:
            raise UnsupportedSpec(f"env {name}: unsupported valueFrom {sorted(source)}")
    return env
