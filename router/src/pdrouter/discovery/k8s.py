"""Kubernetes pod discovery: list + watch engine pods and keep the ready endpoint set current.

Unlike a bare watch loop, this follows the list-then-watch protocol: every (re-)list replaces
the whole set and gives the resourceVersion the next watch starts from; an expired watch (410
Gone) leads to a re-list; and a periodic full re-list bounds how long a missed DELETE can leave
a deleted pod routable. Everything runs as one asyncio task on the router's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from kubernetes_asyncio.client import ApiClient, Configuration, CoreV1Api
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.watch import Watch

from pdrouter.discovery.backoff import ExponentialBackoff
from pdrouter.discovery.base import Discovery, EndpointsListener
from pdrouter.discovery.endpoint import Endpoint
from pdrouter.discovery.kube_config import (
    KubeConfigError,
    load_kube_configuration,
    service_account_namespace,
)
from pdrouter.discovery.pod_set import PodEndpointSet

logger = logging.getLogger(__name__)

# Slack on top of the server-side watch timeout before a silent watch socket counts as dead.
_CLIENT_GRACE_S = 15.0
_HTTP_GONE = 410
_HTTP_FORBIDDEN = 403


class K8sPodDiscovery:
    """Discovers engine pods matching a label selector in one namespace (implements `Discovery`).

    `configuration` is a ready `kubernetes_asyncio` client configuration; when None, `start`
    loads in-cluster config, falling back to the kubeconfig (see `create_k8s_discovery`).
    An empty `namespace` means the router pod's own namespace (else "default").
    """

    def __init__(
        self,
        namespace: str,
        label_selector: str,
        default_port: int,
        *,
        configuration: Configuration | None = None,
        relist_interval_s: float = 60.0,
        watch_timeout_s: float = 300.0,
        request_timeout_s: float = 10.0,
        startup_timeout_s: float = 5.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
    ) -> None:
        if relist_interval_s <= 0 or watch_timeout_s <= 0 or request_timeout_s <= 0:
            raise ValueError("k8s discovery intervals and timeouts must be positive")
        self.namespace = namespace
        self.label_selector = label_selector
        self._configuration = configuration
        self._relist_interval_s = relist_interval_s
        self._watch_timeout_s = watch_timeout_s
        self._request_timeout_s = request_timeout_s
        self._startup_timeout_s = startup_timeout_s
        self._backoff = ExponentialBackoff(backoff_initial_s, backoff_max_s)
        self._pods = PodEndpointSet(default_port)
        self._on_change: EndpointsListener | None = None
        self._task: asyncio.Task[None] | None = None
        self._listed = asyncio.Event()
        self._api: ApiClient | None = None
        self._core: Any = None
        self._watch: Any = None

    def endpoints(self) -> tuple[Endpoint, ...]:
        """The latest ready endpoints, sorted by (model, URL, id)."""
        return self._pods.endpoints()

    async def start(self, on_change: EndpointsListener) -> None:
        """Start listing and watching; returns after the first list or `startup_timeout_s`."""
        if self._task is not None:
            raise RuntimeError("k8s discovery already started")
        if self._configuration is None:
            self._configuration = await load_kube_configuration()
        if not self.namespace:
            self.namespace = await _own_namespace()
        self._on_change = on_change
        self._api = ApiClient(configuration=self._configuration)
        self._core = CoreV1Api(self._api)
        # One Watch for the discovery's lifetime: building one creates an SSL context, which
        # takes tens of milliseconds of the event loop. "object" keeps events as plain dicts.
        self._watch = Watch(return_type="object")
        self._task = asyncio.create_task(self._run(), name="pdrouter-k8s-discovery")
        try:
            async with asyncio.timeout(self._startup_timeout_s):
                await self._listed.wait()
        except TimeoutError:
            logger.warning(
                "k8s discovery: no pod list from the API server after %.1fs; "
                "starting with no engines and retrying in the background",
                self._startup_timeout_s,
            )

    async def stop(self) -> None:
        """Cancel listing and watching and close the API client; safe to call twice."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # wait() rather than `await task`: never re-raises the task's CancelledError
            # as if our caller had been cancelled.
            await asyncio.wait([task])
        if self._watch is not None:
            await self._watch.close()
            self._watch = None
        if self._api is not None:
            await self._api.close()
            self._api = None

    async def _run(self) -> None:
        while True:
            try:
                resource_version = await self._relist()
                self._listed.set()
                progressed = await self._watch_until_relist(resource_version)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any API or transport failure: back off, then re-list
                delay = self._backoff.next_delay()
                logger.warning("k8s discovery: %s; re-listing in %.2fs", self._describe(exc), delay)
                await asyncio.sleep(delay)
                continue
            if progressed:
                self._backoff.reset()
            else:
                # The watch expired before delivering anything: do not hammer the server.
                await asyncio.sleep(self._backoff.next_delay())

    async def _relist(self) -> str:
        """List the matching pods, replace the whole set, return the list's resourceVersion."""
        # Raw JSON (not generated models): parsing stays fast for large pod lists.
        response = await self._core.list_namespaced_pod(
            self.namespace,
            label_selector=self.label_selector,
            _preload_content=False,
            _request_timeout=self._request_timeout_s,
        )
        try:
            body = await response.read()
            if not 200 <= response.status < 300:
                raise ApiException(
                    status=response.status, reason=_status_message(body) or response.reason
                )
        finally:
            response.release()
        pod_list = orjson.loads(body)
        items = pod_list.get("items") or []
        resource_version = str(pod_list["metadata"]["resourceVersion"])
        changed = self._pods.replace_all(item for item in items if isinstance(item, Mapping))
        # The first list is always reported, even when empty, so the listener knows it is in.
        if changed or not self._listed.is_set():
            self._publish()
        log = logger.info if not self._listed.is_set() else logger.debug
        log(
            "k8s discovery: listed %d pods in %s (%s), %d ready, resourceVersion %s",
            len(items),
            self.namespace,
            self.label_selector or "all",
            len(self._pods.endpoints()),
            resource_version,
        )
        return resource_version

    async def _watch_until_relist(self, resource_version: str) -> bool:
        """Follow changes until the next re-list is due or the watch expires.

        Returns False only when the watch expired without delivering anything. A watch that
        the server ends cleanly resumes from the last resourceVersion seen. API and transport
        errors propagate.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._relist_interval_s
        progressed = False
        while (remaining := deadline - loop.time()) > 0:
            # The server ends the watch near the deadline; the client-side guard makes sure of
            # it even if the server does not, and sock_read catches a connection gone silent.
            server_timeout = max(1, math.ceil(min(self._watch_timeout_s, remaining)))
            guard = asyncio.timeout(remaining)
            try:
                async with guard:
                    stream = self._watch.stream(
                        self._core.list_namespaced_pod,
                        self.namespace,
                        label_selector=self.label_selector,
                        resource_version=resource_version,
                        timeout_seconds=server_timeout,
                        allow_watch_bookmarks=True,
                        _request_timeout=aiohttp.ClientTimeout(
                            sock_connect=self._request_timeout_s,
                            sock_read=server_timeout + _CLIENT_GRACE_S,
                        ),
                    )
                    async for event in stream:
                        progressed = True
                        self._apply(event)
            except TimeoutError:
                if not guard.expired():
                    raise  # a read timeout on the socket: treat as a broken connection
                return True  # re-list is due
            except ApiException as exc:
                if exc.status != _HTTP_GONE:
                    raise
                logger.info(
                    "k8s discovery: watch expired (resourceVersion %s is too old); re-listing",
                    self._watch.resource_version or resource_version,
                )
                return progressed
            progressed = True
            resource_version = str(self._watch.resource_version or resource_version)
            logger.debug("k8s discovery: watch ended; resuming from %s", resource_version)
        return True

    def _apply(self, event: Mapping[str, Any]) -> None:
        event_type = event.get("type")
        pod = event.get("raw_object")
        if event_type not in ("ADDED", "MODIFIED", "DELETED") or not isinstance(pod, Mapping):
            return  # BOOKMARK only moves the resourceVersion, which Watch tracks
        if self._pods.apply_event(str(event_type), pod):
            self._publish()

    def _publish(self) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change(self._pods.endpoints())
        except Exception:
            # A listener bug must not stop discovery; the next change is delivered as usual.
            logger.exception("k8s discovery: endpoint listener failed")

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, ApiException):
            text = f"Kubernetes API error {exc.status}: {exc.reason}"
            if exc.status == _HTTP_FORBIDDEN:
                text += (
                    f" (the router's service account needs get, list and watch on pods "
                    f"in namespace {self.namespace})"
                )
            return text
        return f"{type(exc).__name__}: {exc}"


async def create_k8s_discovery(
    namespace: str | None,
    label_selector: str,
    default_port: int,
    *,
    kubeconfig: str | None = None,
    context: str | None = None,
    relist_interval_s: float = 60.0,
    watch_timeout_s: float = 300.0,
    request_timeout_s: float = 10.0,
    startup_timeout_s: float = 5.0,
) -> K8sPodDiscovery:
    """Build a pod discovery from in-cluster config, else the kubeconfig (KUBECONFIG).

    An empty `namespace` means the pod's own namespace (from its service account), else
    "default". Raises `KubeConfigError` when neither config source is usable.
    """
    configuration = await load_kube_configuration(kubeconfig=kubeconfig, context=context)
    return K8sPodDiscovery(
        namespace or await _own_namespace(),
        label_selector,
        default_port,
        configuration=configuration,
        relist_interval_s=relist_interval_s,
        watch_timeout_s=watch_timeout_s,
        request_timeout_s=request_timeout_s,
        startup_timeout_s=startup_timeout_s,
    )


async def _own_namespace() -> str:
    """The router pod's namespace when it runs in a cluster, else "default"."""
    return await asyncio.to_thread(service_account_namespace) or "default"


def _status_message(body: bytes) -> str:
    """The `message` of a Kubernetes Status error body, if it is one."""
    try:
        status = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    return str(status.get("message", "")) if isinstance(status, dict) else ""


__all__ = ["K8sPodDiscovery", "KubeConfigError", "create_k8s_discovery"]


if TYPE_CHECKING:

    def _implements_discovery(discovery: K8sPodDiscovery) -> Discovery:
        return discovery  # mypy checks the protocol here
