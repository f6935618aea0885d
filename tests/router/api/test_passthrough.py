"""HEAD on the probe routes, and vLLM's non-generation routes forwarded to an engine of the
model: a real router process over fake engine processes (test doubles)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.doubles.engine_proc import FakeEngine
from tests.doubles.fixtures import make_fake_engine_fixture
from tests.harness.router_proc import RouterProcess

pytestmark = pytest.mark.slow
engines_module = make_fake_engine_fixture("module")
ROUTES = [
    ("/tokenize", {"prompt": "hello there"}),
    ("/detokenize", {"tokens": [1, 2, 3]}),
    ("/v1/embeddings", {"input": ["a", "b"]}),
    ("/pooling", {"input": "a"}),
    ("/classify", {"input": "a"}),
    ("/score", {"text_1": "a", "text_2": "b"}),
    ("/v1/score", {"text_1": "a", "text_2": "b"}),
    ("/rerank", {"query": "a", "documents": ["b"]}),
    ("/v1/rerank", {"query": "a", "documents": ["b"]}),
    ("/v2/rerank", {"query": "a", "documents": ["b"]}),
]


class Stack:
    """Model `tiny` on two engines, model `other` on a third."""

    def __init__(self, factory: Any) -> None:
        self.tiny: list[FakeEngine] = [factory(models=["tiny"]) for _ in range(2)]
        self.other: FakeEngine = factory(models=["other"])
        engines = [*self.tiny, self.other]
        args = [
            "--static-backends",
            ",".join(e.url for e in engines),
            "--static-models",
            "tiny,tiny,other",
            "--engine-scrape-interval",
            "60",
        ]
        self.router = RouterProcess(args).start()

    def reset(self) -> None:
        for engine in [*self.tiny, self.other]:
            engine.reset()

    def paths_seen(self, engine: FakeEngine) -> dict[str, int]:
        return dict(engine.stats()["by_path"])


@pytest.fixture(scope="module")
def stack(engines_module: Any) -> Iterator[Stack]:
    stack = Stack(engines_module)
    try:
        yield stack
    finally:
        stack.router.stop()


@pytest.mark.parametrize("path", ["/health", "/ready", "/v1/models"])
def test_head_on_probe_routes(stack: Stack, path: str) -> None:
    get = httpx.get(stack.router.url + path)
    head = httpx.head(stack.router.url + path)
    assert get.status_code == head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]


@pytest.mark.parametrize(("path", "fields"), ROUTES)
def test_route_reaches_an_engine_of_the_model(
    stack: Stack, path: str, fields: dict[str, Any]
) -> None:
    stack.reset()
    resp = httpx.post(stack.router.url + path, json={"model": "other", **fields}, timeout=10)
    direct = httpx.post(stack.other.url + path, json={"model": "other", **fields}, timeout=10)
    assert resp.status_code == direct.status_code == 200, resp.text
    assert resp.json() == direct.json()
    assert stack.paths_seen(stack.other) == {path: 2}  # the router's call and ours
    assert all(stack.paths_seen(e) == {} for e in stack.tiny)
    # The engine got the router's request id, and the client learns it.
    sent = stack.other.stats()["recent"][0]["headers"]["x-request-id"]
    assert resp.headers["x-request-id"] == sent
    # Counted as its own kind of request, and kept out of the generation latency histograms.
    assert stack.router.metric("pdstack_router_requests_total", model="other", outcome="ok") >= 1
    assert stack.router.metric("pdstack_router_e2e_seconds_count", model="other") == 0


def test_forwarded_routes_share_the_generation_routes_errors(stack: Stack) -> None:
    stack.reset()
    url = stack.router.url
    unknown = httpx.post(url + "/v1/embeddings", json={"model": "nope", "input": "a"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    assert unknown.json()["error"]["param"] == "model"
    ambiguous = httpx.post(url + "/tokenize", json={"prompt": "a"})  # two models served
    assert ambiguous.status_code == 400 and ambiguous.json()["error"]["param"] == "model"
    assert httpx.post(url + "/tokenize", content=b"{nope").json()["error"]["code"] == "invalid_json"
    assert httpx.get(url + "/tokenize").status_code == 405
    # The engine's own 4xx comes through as it was sent.
    bad = httpx.post(url + "/detokenize", json={"model": "other", "tokens": "x"})
    direct = httpx.post(stack.other.url + "/detokenize", json={"model": "other", "tokens": "x"})
    assert bad.status_code == direct.status_code == 400 and bad.json() == direct.json()
    # A failing engine is retried on another engine of the model.
    stack.tiny[0].set_faults(http_error={"status": 500})
    stack.tiny[1].set_faults(http_error={"status": 500, "count": 1})
    for _ in range(2):
        ok = httpx.post(url + "/v1/embeddings", json={"model": "tiny", "input": "a"}, timeout=10)
        assert ok.status_code in (200, 502)
    assert stack.router.metric("pdstack_router_retries_total", phase="aggregated") >= 1
    assert stack.router.metric("pdstack_router_requests_total", api="embeddings") >= 2


def test_openapi_lists_the_forwarded_routes(stack: Stack) -> None:
    paths = httpx.get(stack.router.url + "/openapi.json").json()["paths"]
    assert {p for p, _ in ROUTES} <= set(paths)
