"""The router process in front of fake engine processes on loopback (aggregated mode)."""

from __future__ import annotations

import json
import re
import time
from collections import Counter

import httpx
import openai
import pytest

from tests.harness.router_proc import RouterProcess, static_args

pytestmark = pytest.mark.slow


@pytest.fixture
def two_engines(fake_engine_factory):  # type: ignore[no-untyped-def]
    return [
        fake_engine_factory(models=["tiny"], itl_ms=2),
        fake_engine_factory(models=["tiny"], itl_ms=2),
    ]


def router(engines, *extra: str, env=None) -> RouterProcess:  # type: ignore[no-untyped-def]
    args = [
        *static_args(engines),
        "--engine-scrape-interval",
        "0.3",
        "--health-failure-threshold",
        "2",
        *extra,
    ]
    return RouterProcess(args, env).start()


def test_openai_client_unchanged_stream_and_non_stream(two_engines) -> None:  # type: ignore[no-untyped-def]
    with router(two_engines) as r:
        client = openai.OpenAI(base_url=r.url + "/v1", api_key="unused")
        comp = client.completions.create(model="tiny", prompt="hello there", max_tokens=6)
        assert comp.usage is not None and comp.usage.completion_tokens == 6
        chat = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=5
        )
        assert chat.choices[0].message.content and chat.usage.completion_tokens == 5  # type: ignore[union-attr]
        pieces = [
            c.choices[0].text
            for c in client.completions.create(
                model="tiny", prompt="a b", max_tokens=7, stream=True
            )
            if c.choices
        ]
        assert len([p for p in pieces if p]) == 7
        chunks = list(
            client.chat.completions.create(
                model="tiny",
                messages=[{"role": "user", "content": "x"}],
                max_tokens=4,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
        models = client.models.list()
        assert [m.id for m in models.data] == ["tiny"]
    counts = [e.stats()["by_path"] for e in two_engines]
    assert all(sum(c.values()) >= 2 for c in counts)  # round robin used both engines


def _normalise(body: bytes) -> bytes:
    """Without the parts that differ between two runs: the time and the engine's request id
    (the router sends engines its own id, not the client's)."""
    body = re.sub(rb'"id":"(chat)?cmpl-[^"]*"', b'"id":"cmpl-x"', body)
    return re.sub(rb'"created":\d+', b'"created":0', body)


def test_relay_is_byte_for_byte(two_engines) -> None:  # type: ignore[no-untyped-def]
    engine = two_engines[0]
    payload = {"model": "tiny", "prompt": "same prompt", "max_tokens": 5, "stream": True}
    with router([engine]) as r:
        via_router = httpx.post(
            r.url + "/v1/completions", json=payload, headers={"x-request-id": "rid-1"}
        )
        direct = httpx.post(
            engine.url + "/v1/completions", json=payload, headers={"x-request-id": "rid-1"}
        )
        assert via_router.headers["content-type"].startswith("text/event-stream")
        assert via_router.headers["x-request-id"] == "rid-1"
        assert _normalise(via_router.content) == _normalise(direct.content)
        plain = {**payload, "stream": False}
        via_router = httpx.post(
            r.url + "/v1/completions", json=plain, headers={"x-request-id": "rid-2"}
        )
        direct = httpx.post(
            engine.url + "/v1/completions", json=plain, headers={"x-request-id": "rid-2"}
        )
        assert _normalise(via_router.content) == _normalise(direct.content)
    recent = engine.stats()["recent"]
    router_ids = [r["headers"]["x-request-id"] for r in recent if r["path"] == "/v1/completions"]
    assert "rid-1" in router_ids and "rid-2" in router_ids  # the direct calls
    assert len(set(router_ids)) == 4  # the router's two calls had ids of its own


def test_stream_arrives_incrementally(fake_engine_factory) -> None:  # type: ignore[no-untyped-def]
    engine = fake_engine_factory(models=["tiny"], itl_ms=60)
    with (
        router([engine]) as r,
        httpx.stream(
            "POST",
            r.url + "/v1/completions",
            json={"model": "tiny", "prompt": "p", "max_tokens": 5, "stream": True},
        ) as resp,
    ):
        arrivals = [time.monotonic() for line in resp.iter_lines() if line.startswith("data: {")]
    assert len(arrivals) == 5
    assert arrivals[-1] - arrivals[0] > 0.15  # not buffered until the end


def test_models_lists_union_of_ready_models(fake_engine_factory) -> None:  # type: ignore[no-untyped-def]
    a = fake_engine_factory(models=["alpha"])
    b = fake_engine_factory(models=["beta"])
    args = [
        "--static-backends",
        f"{a.url},{b.url}",
        "--static-models",
        "alpha,beta",
        "--engine-scrape-interval",
        "0.2",
        "--health-failure-threshold",
        "1",
    ]
    with RouterProcess(args).start() as r:
        assert sorted(m["id"] for m in httpx.get(r.url + "/v1/models").json()["data"]) == [
            "alpha",
            "beta",
        ]
        b.stop()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            ids = [m["id"] for m in httpx.get(r.url + "/v1/models").json()["data"]]
            if ids == ["alpha"]:
                break
            time.sleep(0.1)
        assert ids == ["alpha"]
        ready = httpx.get(r.url + "/ready")
        assert ready.status_code == 503 and ready.json()["models"]["beta"]["ready"] is False
        gone = httpx.post(r.url + "/v1/completions", json={"model": "beta", "prompt": "x"})
        assert gone.status_code == 503 and gone.headers["retry-after"] == "1"
        assert gone.json()["error"]["code"] == "no_ready_engine"


def test_engine_down_is_retried_then_taken_out_and_comes_back(two_engines) -> None:  # type: ignore[no-untyped-def]
    a = two_engines[0]
    with router(two_engines) as r:
        a.kill()
        # No client request fails: a connect error is retried on the other engine.
        for _ in range(6):
            resp = httpx.post(
                r.url + "/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 2}
            )
            assert resp.status_code == 200
        assert r.metric("pdstack_router_retries_total", phase="aggregated") >= 1
        deadline = time.monotonic() + 5
        while r.metric("pdstack_router_engine_healthy", engine=a.url.split("://")[1]) != 0:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        a.start()  # same port
        while r.metric("pdstack_router_engine_healthy", engine=a.url.split("://")[1]) != 1:
            assert time.monotonic() < deadline + 5
            time.sleep(0.1)
        for _ in range(6):
            httpx.post(
                r.url + "/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 2}
            )
        assert sum(a.stats()["by_path"].values()) >= 2


def test_round_robin_and_session_distribution(fake_engine_factory) -> None:  # type: ignore[no-untyped-def]
    engines = [fake_engine_factory(models=["tiny"]) for _ in range(3)]
    with router(engines) as r:
        for _ in range(30):
            httpx.post(
                r.url + "/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 1}
            )
    assert [sum(e.stats()["by_path"].values()) for e in engines] == [10, 10, 10]
    for e in engines:
        e.reset()
    with router(engines, "--routing-logic", "session", "--session-key", "x-user-id") as r:
        for user in ("alice", "bob", "carol", "dave"):
            for _ in range(5):
                httpx.post(
                    r.url + "/v1/completions",
                    headers={"x-user-id": user},
                    json={"model": "tiny", "prompt": user, "max_tokens": 1},
                )
    per_engine = [Counter(q["body"]["prompt"] for q in e.stats()["recent"]) for e in engines]
    for user in ("alice", "bob", "carol", "dave"):
        holders = [c[user] for c in per_engine if c[user]]
        assert holders == [5], f"{user} was split: {per_engine}"


def test_json_logs_and_request_log_lines_without_prompts(fake_engine_factory) -> None:  # type: ignore[no-untyped-def]
    engine = fake_engine_factory(models=["tiny"])
    args = [*static_args([engine]), "--log-format", "json", "--log-requests"]
    with RouterProcess(args).start() as r:
        httpx.post(
            r.url + "/v1/completions",
            json={"model": "tiny", "prompt": "secret prompt text", "max_tokens": 1},
        )
        time.sleep(0.2)
        log = r.log_text()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(
        entry["logger"] == "pdrouter.access" and "outcome=ok" in entry["msg"] for entry in lines
    )
    assert "secret prompt text" not in log
