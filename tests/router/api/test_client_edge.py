"""What careless and hostile clients do to the router's metrics and logs, and what the router's
answers tell the OpenAI SDK: a real router process over a fake engine process (test double)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.doubles.engine_proc import FakeEngine
from tests.doubles.fixtures import make_fake_engine_fixture
from tests.harness.router_proc import RouterProcess, metric_value, static_args

pytestmark = pytest.mark.slow
engines_module = make_fake_engine_fixture("module")


@pytest.fixture(scope="module")
def stack(engines_module: Any) -> Iterator[tuple[FakeEngine, RouterProcess]]:
    engine = engines_module(models=["tiny"], itl_ms=5)
    args = [
        *static_args([engine]),
        "--engine-scrape-interval",
        "60",
        "--log-requests",
        "--first-byte-timeout",
        "1",
        "--non-stream-timeout",
        "2",
    ]
    with RouterProcess(args).start() as router:
        yield engine, router


def _count(router: RouterProcess, name: str) -> float:
    return router.metric(name + "_count", model="tiny")


@pytest.mark.parametrize("delta", ["reasoning", "reasoning_content", "tool_calls"])
def test_ttft_and_itl_count_reasoning_and_tool_call_deltas(
    stack: tuple[FakeEngine, RouterProcess], delta: str
) -> None:
    engine, router = stack
    engine.reset()
    engine.admin_config(chat_delta=delta, itl_ms=30)  # tokens arrive as separate reads
    before = (
        _count(router, "pdstack_router_ttft_seconds"),
        _count(router, "pdstack_router_itl_seconds"),
    )
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "think first"}],
        "max_tokens": 4,
        "stream": True,
    }
    resp = httpx.post(router.url + "/v1/chat/completions", json=body, timeout=10)
    assert resp.status_code == 200 and f'"{delta}":' in resp.text
    assert _count(router, "pdstack_router_ttft_seconds") == before[0] + 1
    assert _count(router, "pdstack_router_itl_seconds") > before[1]


def test_ttft_counts_a_first_token_split_across_chunks(
    stack: tuple[FakeEngine, RouterProcess],
) -> None:
    engine, router = stack
    engine.reset()
    engine.admin_config(split_first_token=True)
    before = _count(router, "pdstack_router_ttft_seconds")
    body = {"model": "tiny", "prompt": "one token please", "max_tokens": 1, "stream": True}
    resp = httpx.post(router.url + "/v1/completions", json=body, timeout=10)
    assert resp.status_code == 200 and resp.text.endswith("data: [DONE]\n\n")
    assert _count(router, "pdstack_router_ttft_seconds") == before + 1


def test_unknown_models_share_one_label_and_long_names_are_refused(
    stack: tuple[FakeEngine, RouterProcess],
) -> None:
    _, router = stack
    for i in range(30):
        resp = httpx.post(
            router.url + "/v1/completions", json={"model": f"probe-{i}", "prompt": "x"}
        )
        assert resp.status_code == 404
    text = router.metrics()
    assert "probe-" not in text
    assert metric_value(text, "pdstack_router_requests_total", model="unknown") >= 30
    huge = httpx.post(router.url + "/v1/completions", json={"model": "m" * 100_000, "prompt": "x"})
    assert huge.status_code == 400
    assert huge.json()["error"]["code"] == "invalid_model"
    assert huge.json()["error"]["param"] == "model"


def test_a_newline_in_client_text_cannot_forge_a_log_line(
    stack: tuple[FakeEngine, RouterProcess],
) -> None:
    _, router = stack
    forged = "2030-01-01 00:00:00,000 ERROR pdrouter: forged"
    httpx.post(router.url + "/v1/completions", json={"model": f"x\n{forged}", "prompt": "x"})
    time.sleep(0.2)
    lines = router.log_text().splitlines()
    assert not any(line.startswith(forged) for line in lines)
    assert any(f"x\\n{forged}" in line for line in lines)  # logged, escaped


def test_a_client_leaving_during_upload_is_counted_without_a_traceback(
    stack: tuple[FakeEngine, RouterProcess],
) -> None:
    _, router = stack
    before = router.metric("pdstack_router_requests_total", model="unknown", outcome="cancelled")
    head = (
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", router.port)) as sock:
        sock.sendall(head + b'{"model": "tiny", "prompt": "')
        time.sleep(0.3)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        now = router.metric("pdstack_router_requests_total", model="unknown", outcome="cancelled")
        if now == before + 1:
            break
        time.sleep(0.1)
    assert now == before + 1
    assert "Traceback" not in router.log_text()


def test_the_openai_sdk_does_not_repeat_work_an_engine_spent(
    stack: tuple[FakeEngine, RouterProcess],
) -> None:
    """A non-streamed answer is not cut by --first-byte-timeout (vLLM sends its headers with
    the last byte); past its own deadline the 504 says x-should-retry: false, so the SDK does
    not send the request twice more."""
    engine, router = stack
    engine.reset()
    client = openai.OpenAI(base_url=router.url + "/v1", api_key="none", max_retries=2)
    engine.set_faults(slow={"delay_ms": 1300})  # past --first-byte-timeout 1, within 2
    done = client.completions.create(model="tiny", prompt="slow", max_tokens=2)
    assert done.choices[0].text
    engine.set_faults(hang={})
    with pytest.raises(openai.APIStatusError) as info:
        client.completions.create(model="tiny", prompt="hang", max_tokens=2)
    assert info.value.status_code == 504
    assert info.value.response.headers["x-should-retry"] == "false"
    assert engine.stats()["by_path"]["/v1/completions"] == 2  # one call each, no retries
