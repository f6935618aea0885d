"""K8sPodDiscovery against FakeKubeApiServer (a test double) through the real client code.

The recorded stream (fixtures/): list-1 has a ready prefill pod (A), a ready decode pod (B)
and a starting decode pod (C). watch-1 adds D, touches C (still not ready: a no-op), turns A
not ready, sends a bookmark, deletes B, then closes. watch-2 answers the resumed watch with a
410 Expired ERROR event. list-2 (the re-list) has A ready again, C now ready and a new IPv6
pod E, and no D: D was deleted while the watch was down. watch-3 marks E terminating.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio.client import Configuration
from pdrouter.discovery.endpoint import Endpoint, Role
from pdrouter.discovery.k8s import K8sPodDiscovery, create_k8s_discovery

from tests.router.discovery.fake_kube_api import (
    ErrorReply,
    FakeKubeApiServer,
    WatchScript,
    load_events,
    load_json,
)

NAMESPACE = "llm"
SELECTOR = "app.kubernetes.io/instance=pdstack,pdstack.io/component=engine"
POD_PATH = f"/api/v1/namespaces/{NAMESPACE}/pods"
A = "pdstack-tiny-prefill-6d8f7b9c54-q7x2k"
B = "pdstack-tiny-decode-7f9b6c8d45-m4n8p"
C = "pdstack-tiny-decode-7f9b6c8d45-z9r5t"
D = "pdstack-tiny-both-5c7d9e1f23-h3j6w"
E = "pdstack-tiny-decode-7f9b6c8d45-v2b8c"


def names(endpoints: tuple[Endpoint, ...]) -> list[str]:
    return [e.name for e in endpoints]


def write_kubeconfig(path: Path, server_url: str) -> Path:
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: {server_url}
contexts:
- name: fake
  context: {{cluster: fake, user: tester, namespace: {NAMESPACE}}}
current-context: fake
users:
- name: tester
  user: {{token: test-token}}
"""
    )
    return path


@pytest.fixture(autouse=True)
def not_in_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    # In-cluster detection keys off these; make sure the kubeconfig path is the one taken.
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)


@pytest.fixture
async def recorded_api() -> AsyncIterator[FakeKubeApiServer]:
    server = FakeKubeApiServer(
        lists=[load_json("list-1.json"), load_json("list-2.json")],
        watches=[
            WatchScript(load_events("watch-1.jsonl")),
            WatchScript(load_events("watch-2.jsonl")),
            WatchScript(load_events("watch-3.jsonl"), hold_open=True),
        ],
    )
    async with server:
        yield server


def direct_discovery(api: FakeKubeApiServer, **kwargs: Any) -> K8sPodDiscovery:
    return K8sPodDiscovery(
        NAMESPACE, SELECTOR, 8000, configuration=Configuration(host=api.url), **kwargs
    )


async def test_recorded_list_watch_expiry_and_relist(
    recorded_api: FakeKubeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = recorded_api
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "config", api.url)))
    discovery = await create_k8s_discovery(NAMESPACE, SELECTOR, 8000, relist_interval_s=3600)
    reported: list[tuple[Endpoint, ...]] = []

    await discovery.start(reported.append)
    # start() returns with the first list applied.
    assert sorted(names(discovery.endpoints())) == sorted([A, B])
    await api.wait_until(lambda: len(reported) == 6)
    assert api.open_watches == 1
    await discovery.stop()

    assert [sorted(names(r)) for r in reported] == [
        sorted([A, B]),  # list-1 (C is still starting)
        sorted([A, B, D]),  # ADDED D
        sorted([B, D]),  # A not ready (C's no-op MODIFIED and the BOOKMARK reported nothing)
        [D],  # DELETED B
        sorted([A, C, E]),  # re-list after 410: D, deleted while the watch was down, is gone
        sorted([A, C]),  # E terminating (deletionTimestamp set)
    ]
    for endpoints in reported:
        assert list(endpoints) == sorted(endpoints, key=lambda e: (e.model, e.url, e.id))
    assert discovery.endpoints() == reported[-1]

    by_name = {e.name: e for e in reported[0]}
    assert by_name[A].url == "http://10.244.1.17:8000"
    assert by_name[A].role is Role.PREFILL
    assert by_name[A].model == "Qwen/Qwen3-0.6B"
    assert by_name[A].id == "0f3c2a6e-8a51-4d2b-9a43-2f1e7c9d1a01"
    assert by_name[B].role is Role.DECODE
    assert (by_name[B].lmcache_init_ports, by_name[B].lmcache_alloc_ports) == ((7300,), (7400,))
    e = next(e for e in reported[-2] if e.name == E)
    assert e.url == "http://[fd00:10:244:3::1c]:8000"
    assert e.lmcache_init_ports == (7300, 7301)

    # What reached the server: list, watch from the list's version, resumed watch from the
    # last event's version after the clean close, re-list after 410, watch from the new list.
    assert [r.kind for r in api.requests] == ["list", "watch", "watch", "list", "watch"]
    assert all(r.path == POD_PATH for r in api.requests)
    assert all(r.query["labelSelector"] == SELECTOR for r in api.requests)
    assert all(r.authorization == "Bearer test-token" for r in api.requests)
    assert [r.query["resourceVersion"] for r in api.of_kind("watch")] == ["1000", "1005", "1200"]
    assert all("resourceVersion" not in r.query for r in api.of_kind("list"))
    # stop() closed the open watch connection.
    await api.wait_until(lambda: api.open_watches == 0)


async def test_periodic_relist_drops_pod_whose_delete_was_missed() -> None:
    first = load_json("list-1.json")
    second = load_json("list-1.json")
    # B vanished but its DELETED event never arrived (the watch stays silent).
    second["items"] = [p for p in second["items"] if p["metadata"]["name"] != B]
    second["metadata"]["resourceVersion"] = "1100"
    silent = WatchScript([], hold_open=True)
    async with FakeKubeApiServer(lists=[first, second], watches=[silent]) as api:
        discovery = direct_discovery(api, relist_interval_s=0.3)
        reported: list[tuple[Endpoint, ...]] = []
        await discovery.start(reported.append)
        await api.wait_until(lambda: len(api.of_kind("list")) >= 3)
        await discovery.stop()

    assert [sorted(names(r)) for r in reported] == [sorted([A, B]), [A]]
    # Each periodic re-list restarts the watch from that list's resourceVersion.
    assert [r.query["resourceVersion"] for r in api.of_kind("watch")][:2] == ["1000", "1100"]


async def test_api_errors_are_retried_with_backoff(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pdrouter.discovery.k8s")
    lists: list[Any] = [
        ErrorReply(500, "etcdserver: request timed out"),
        ErrorReply(403, 'pods is forbidden: User "system:serviceaccount:llm:router" cannot list'),
        load_json("list-1.json"),
    ]
    async with FakeKubeApiServer(lists=lists, watches=[WatchScript([], hold_open=True)]) as api:
        discovery = direct_discovery(api, backoff_initial_s=0.01, startup_timeout_s=30)
        await discovery.start(lambda _: None)
        assert sorted(names(discovery.endpoints())) == sorted([A, B])
        await discovery.stop()

    assert len(api.of_kind("list")) == 3
    messages = [r.getMessage() for r in caplog.records]
    assert any("500" in m and "request timed out" in m for m in messages)
    assert any("403" in m and "get, list and watch on pods in namespace llm" in m for m in messages)


async def test_watch_error_event_other_than_410_relists_after_backoff() -> None:
    forbidden = (
        b'{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},'
        b'"status":"Failure","message":"internal error","reason":"InternalError","code":500}}\n'
    )
    async with FakeKubeApiServer(
        lists=[load_json("list-1.json"), load_json("list-2.json")],
        watches=[WatchScript([forbidden]), WatchScript([], hold_open=True)],
    ) as api:
        discovery = direct_discovery(api, backoff_initial_s=0.01)
        reported: list[tuple[Endpoint, ...]] = []
        await discovery.start(reported.append)
        await api.wait_until(lambda: len(api.of_kind("list")) == 2 and api.open_watches == 1)
        await discovery.stop()
    assert [sorted(names(r)) for r in reported] == [sorted([A, B]), sorted([A, C, E])]


async def test_stop_returns_while_watch_is_open() -> None:
    api = FakeKubeApiServer(lists=[load_json("list-1.json")], watches=[WatchScript([], True)])
    async with api:
        discovery = direct_discovery(api)
        await discovery.start(lambda _: None)
        await api.wait_until(lambda: api.open_watches == 1)
        # A bound only to turn a hang into a failure, not a timing assertion.
        await asyncio.wait_for(discovery.stop(), timeout=10)
        await api.wait_until(lambda: api.open_watches == 0)
        await discovery.stop()  # a second stop is harmless


async def test_start_returns_when_api_server_is_unreachable() -> None:
    with socket.socket() as sock:  # a loopback port with nothing listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    discovery = K8sPodDiscovery(
        NAMESPACE,
        SELECTOR,
        8000,
        configuration=Configuration(host=f"http://127.0.0.1:{port}"),
        startup_timeout_s=0.2,
        backoff_initial_s=0.05,
    )
    await discovery.start(lambda _: None)
    assert discovery.endpoints() == ()
    await discovery.stop()


async def test_listener_failure_does_not_stop_discovery(
    recorded_api: FakeKubeApiServer,
) -> None:
    api = recorded_api
    calls: list[int] = []

    def flaky_listener(endpoints: tuple[Endpoint, ...]) -> None:
        calls.append(len(endpoints))
        raise RuntimeError("listener bug")

    discovery = direct_discovery(api, relist_interval_s=3600)
    await discovery.start(flaky_listener)
    await api.wait_until(lambda: len(calls) == 6)
    await discovery.stop()
    assert calls == [2, 3, 2, 1, 3, 2]


async def test_empty_first_list_is_reported_once() -> None:
    empty = {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "7"}}
    async with FakeKubeApiServer(lists=[empty], watches=[WatchScript([], hold_open=True)]) as api:
        discovery = direct_discovery(api)
        reported: list[tuple[Endpoint, ...]] = []
        await discovery.start(reported.append)
        await discovery.stop()
    assert reported == [()]


async def test_constructed_without_configuration_loads_kubeconfig_on_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # How the router's app state builds it: plain settings, config found at start().
    async with FakeKubeApiServer(
        lists=[load_json("list-1.json")], watches=[WatchScript([], hold_open=True)]
    ) as api:
        monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "config", api.url)))
        discovery = K8sPodDiscovery(
            namespace=NAMESPACE, label_selector=SELECTOR, default_port=8000, relist_interval_s=60
        )
        await discovery.start(lambda _: None)
        assert sorted(names(discovery.endpoints())) == sorted([A, B])
        await discovery.stop()
    assert api.requests[0].authorization == "Bearer test-token"
