"""The pod runner's calls to the API server, as raw JSON (what `kubectl get -o json` shows).

The runner acts as the kubelet of every kwok node, with the cluster's admin kubeconfig.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from tests.cluster.podrunner.mounts import decode_secret
from tests.cluster.podrunner.podspec import Json

KWOK_GROUP = ("kwok.x-k8s.io", "v1alpha1")
STRATEGIC = "application/strategic-merge-patch+json"


async def _json(call: Any) -> Any:
    resp = await call
    return json.loads(await resp.read())


class KubeApi:
    """Reads, watches and status writes for pods, and the objects their volumes need."""

    def __init__(self, api_client: client.ApiClient, server: str, ca_file: Path) -> None:
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.server = server
        self.ca_file = ca_file

    async def _get_or_none(self, call: Any) -> Any:
        try:
            return await _json(call)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def config_map(self, namespace: str, name: str) -> dict[str, bytes] | None:
        obj = await self._get_or_none(
            self.core.read_namespaced_config_map(name, namespace, _preload_content=False)
        )
        if obj is None:
            return None
        data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
        data.update(decode_secret(obj.get("binaryData")))
        return data

    async def secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        obj = await self._get_or_none(
            self.core.read_namespaced_secret(name, namespace, _preload_content=False)
        )
        return None if obj is None else decode_secret(obj.get("data"))

    async def pvc_host_path(self, namespace: str, claim: str) -> str | None:
        pvc = await self._get_or_none(
            self.core.read_namespaced_persistent_volume_claim(
                claim, namespace, _preload_content=False
            )
        )
        volume = (pvc or {}).get("spec", {}).get("volumeName")
        if not volume:
            return None
        pv = await _json(self.core.read_persistent_volume(volume, _preload_content=False))
        spec = pv.get("spec", {})
        return (spec.get("hostPath") or spec.get("local") or {}).get("path")

    async def pod_token(self, pod: Json, audience: str | None, expiration_s: int) -> str:
        """A ServiceAccount token bound to this pod (TokenRequest, as the kubelet asks)."""
        meta = pod["metadata"]
        body: dict[str, Any] = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": expiration_s,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        if audience:
            body["spec"]["audiences"] = [audience]
        sa = pod["spec"].get("serviceAccountName") or "default"
        answer = await _json(
            self.core.create_namespaced_service_account_token(
                sa, meta["namespace"], body, _preload_content=False
            )
        )
        return str(answer["status"]["token"])

    async def services(self, namespace: str) -> list[Json]:
        answer = await _json(self.core.list_namespaced_service(namespace, _preload_content=False))
        return list(answer.get("items") or [])

    async def namespace_labels(self, namespace: str) -> dict[str, str]:
        obj = await _json(self.core.read_namespace(namespace, _preload_content=False))
        return dict(obj["metadata"].get("labels") or {})

    async def node(self, name: str) -> Json:
        return dict(await _json(self.core.read_node(name, _preload_content=False)))

    async def patch_status(self, pod: Json, status: Json) -> None:
        meta = pod["metadata"]
        try:
            await self.core.patch_namespaced_pod_status(
                meta["name"],
                meta["namespace"],
                {"status": status},
                _content_type=STRATEGIC,
                _preload_content=False,
            )
        except ApiException as exc:
            if exc.status != 404:  # the pod is gone: nothing to report any more
                raise

    async def delete_pod_now(self, pod: Json) -> None:
        """The kubelet's last word on a stopped pod: delete it with no further grace."""
        meta = pod["metadata"]
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}}
        try:
            await self.core.delete_namespaced_pod(
                meta["name"], meta["namespace"], body=body, _preload_content=False
            )
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    async def create_kwok_object(self, plural: str, pod: Json, spec: Json) -> None:
        """A kwok PortForward or Logs object for the pod, owned by it (deleted with it)."""
        meta = pod["metadata"]
        body = {
            "apiVersion": "/".join(KWOK_GROUP),
            "kind": {"portforwards": "PortForward", "logs": "Logs"}[plural],
            "metadata": {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]}
                ],
            },
            "spec": spec,
        }
        try:
            await self.custom.create_namespaced_custom_object(
                *KWOK_GROUP, meta["namespace"], plural, body, _preload_content=False
            )
        except ApiException as exc:
            if exc.status != 409:
                raise

    async def watch_pods(self) -> AsyncIterator[tuple[str, Json]]:
        """List, then watch, every pod; re-lists whenever the watch ends or expires."""
        while True:
            listing = await _json(self.core.list_pod_for_all_namespaces(_preload_content=False))
            pods = listing.get("items") or []
            for pod in pods:
                yield "ADDED", pod
            # Pods that went away while nobody watched: the caller stops what it ran for them.
            yield "SYNCED", {"uids": [p["metadata"]["uid"] for p in pods]}
            version = listing["metadata"]["resourceVersion"]
            resp = await self.core.list_pod_for_all_namespaces(
                watch=True,
                resource_version=version,
                timeout_seconds=240,
                allow_watch_bookmarks=True,
                _preload_content=False,
            )
            async with resp:
                async for line in resp.content:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event["type"] == "ERROR":
                        break  # e.g. 410 Gone: list again
                    if event["type"] != "BOOKMARK":
                        yield event["type"], event["object"]
