"""A pod's volumes as folders on this machine, and the container paths that point into them.

Without a mount namespace a process cannot see /etc/pdstack/... as its pod would, so each volume
is materialised under the pod's folder (ConfigMaps and Secrets written out, the service-account
token requested for this very pod, PVCs resolved to their PersistentVolume's hostPath) and every
container path under a volumeMount is rewritten to its folder wherever it appears in the
container's command, args and env. A chart that points a flag at a path no volume provides still
fails: the rewritten path does not exist either.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tests.cluster.podrunner.podspec import Json, UnsupportedSpec, field_ref


class VolumeSource(Protocol):
    """The API reads a kubelet makes to fill a pod's volumes."""

    async def config_map(self, namespace: str, name: str) -> dict[str, bytes] | None: ...

    async def secret(self, namespace: str, name: str) -> dict[str, bytes] | None: ...

    async def pvc_host_path(self, namespace: str, claim: str) -> str | None: ...

    async def pod_token(self, pod: Json, audience: str | None, expiration_s: int) -> str: ...


@dataclass
class MountTable:
    """Container path prefix -> folder on this machine, longest prefix first."""

    entries: list[tuple[str, Path]] = field(default_factory=list)

    def add(self, container_path: str, host_path: Path) -> None:
        self.entries.append((container_path.rstrip("/") or "/", host_path))
        self.entries.sort(key=lambda e: len(e[0]), reverse=True)

    def host_path(self, container_path: str) -> Path | None:
        """The folder or file `container_path` is on this machine, if a mount holds it."""
        for prefix, host in self.entries:
            if container_path == prefix or container_path.startswith(prefix + "/"):
                return host / container_path[len(prefix) :].lstrip("/")
        return None

    def rewrite(self, text: str) -> str:
        """Every mounted container path inside `text` (a flag, a shell line, a JSON value)."""
        for prefix, host in self.entries:
            pattern = r"(?<![\w.\-/])" + re.escape(prefix) + r"(?=/|$|[^\w.\-])"
            text = re.sub(pattern, lambda _m, h=str(host): h, text)
        return text


def _write_items(
    folder: Path, data: Mapping[str, bytes], items: list[Json] | None, mode: int | None
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    chosen = [(i["key"], i["path"], i.get("mode")) for i in items] if items else None
    for key, rel, item_mode in chosen or [(k, k, None) for k in data]:
        if key not in data:
            raise UnsupportedSpec(f"volume item key {key!r} not in its source")
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data[key])
        if item_mode is not None or mode is not None:
            target.chmod(int(item_mode if item_mode is not None else mode))  # type: ignore[arg-type]


async def _keyed_source(
    api: VolumeSource, kind: str, namespace: str, ref: Json
) -> dict[str, bytes] | None:
    name = ref.get("name") or ref.get("secretName")
    if kind == "configMap":
        data = await api.config_map(namespace, name)
    else:
        data = await api.secret(namespace, name)
    if data is None and not ref.get("optional"):
        raise UnsupportedSpec(f"{kind} {name!r} for a volume not found")
    return data


async def _projected(api: VolumeSource, pod: Json, folder: Path, spec: Json) -> None:
    namespace = pod["metadata"]["namespace"]
    folder.mkdir(parents=True, exist_ok=True)
    for source in spec.get("sources") or []:
        if "serviceAccountToken" in source:
            sat = source["serviceAccountToken"]
            token = await api.pod_token(
                pod, sat.get("audience"), int(sat.get("expirationSeconds", 3607))
            )
            (folder / sat["path"]).write_text(token)
        elif "configMap" in source or "secret" in source:
            kind = "configMap" if "configMap" in source else "secret"
            data = await _keyed_source(api, kind, namespace, source[kind])
            if data is not None:
                _write_items(folder, data, source[kind].get("items"), None)
        elif "downwardAPI" in source:
            _downward(pod, folder, source["downwardAPI"])
        else:
            raise UnsupportedSpec(f"projected source {sorted(source)} is not supported")


def _downward(pod: Json, folder: Path, spec: Json) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for item in spec.get("items") or []:
        if "fieldRef" not in item:
            raise UnsupportedSpec("downwardAPI items other than fieldRef are not supported")
        (folder / item["path"]).write_text(field_ref(pod, item["fieldRef"]["fieldPath"]))


async def materialise_volumes(api: VolumeSource, pod: Json, pod_dir: Path) -> dict[str, Path]:
    """Each of the pod's volumes as a folder here; raises UnsupportedSpec for unknown kinds."""
    namespace = pod["metadata"]["namespace"]
    folders: dict[str, Path] = {}
    for volume in pod["spec"].get("volumes") or []:
        name = volume["name"]
        folder = pod_dir / "volumes" / name
        if "emptyDir" in volume:
            folder.mkdir(parents=True, exist_ok=True)
        elif "configMap" in volume or "secret" in volume:
            kind = "configMap" if "configMap" in volume else "secret"
            ref = volume[kind]
            data = await _keyed_source(api, kind, namespace, ref)
            _write_items(folder, data or {}, ref.get("items"), ref.get("defaultMode"))
        elif "projected" in volume:
            await _projected(api, pod, folder, volume["projected"])
        elif "downwardAPI" in volume:
            _downward(pod, folder, volume["downwardAPI"])
        elif "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            path = await api.pvc_host_path(namespace, claim)
            if path is None:
                raise UnsupportedSpec(f"PVC {claim!r} is not bound to a hostPath or local PV")
            folder = Path(path)
        elif "hostPath" in volume:
            folder = Path(volume["hostPath"]["path"])
            if volume["hostPath"].get("type") == "DirectoryOrCreate":
                folder.mkdir(parents=True, exist_ok=True)
        else:
            kinds = sorted(set(volume) - {"name"})
            raise UnsupportedSpec(f"volume {name!r}: {kinds} volumes are not supported")
        folders[name] = folder
    return folders


def mount_table(container: Json, volumes: Mapping[str, Path]) -> MountTable:
    """The container's volumeMounts (with subPath) as a MountTable."""
    table = MountTable()
    for mount in container.get("volumeMounts") or []:
        if mount["name"] not in volumes:
            raise UnsupportedSpec(f"volumeMount {mount['name']!r} names no volume")
        host = volumes[mount["name"]]
        if mount.get("subPath"):
            host = host / mount["subPath"]
        table.add(mount["mountPath"], host)
    return table


def decode_secret(data: Mapping[str, Any] | None) -> dict[str, bytes]:
    """A Secret's base64 `data` as bytes."""
    return {k: base64.b64decode(v) for k, v in (data or {}).items()}
