"""Real failures of real engines under a disagg_prefill router: the client gets the
documented error within its deadline, and the router serves again once the engine is back."""

from __future__ import annotations

import time

import openai
import procs
import pytest

from tests.e2e.harness import EnginePair, RouterFactory
from tests.e2e.helpers import (
    IGNORE_EOS,
    MODEL,
    client,
    metric,
    post,
    unique_prompt,
    wait_for_value,
    wait_router_ready,
)

pytestmark = pytest.mark.e2e

CLIENT_DEADLINE = 60.0  # what the test's client is willing to wait for an answer or an error
EXTERNAL_HITS = "vllm:external_prefix_cache_hits_total"


@pytest.fixture(scope="module")
def router(engine_pair: EnginePair, router_factory: RouterFactory) -> procs.ManagedProcess:
    """A disagg_prefill router with short engine deadlines, no aggregated fallback."""
    return router_factory.start(
        [engine_pair.prefill.url, engine_pair.decode.url],
        ["prefill", "decode"],
        "disagg_prefill",
        extra_args=(
            "--pd-fallback",
            "none",
            "--idle-timeout",
            "15",
            "--prefill-timeout",
            "30",
            "--connect-timeout",
            "2",
        ),
    )


def assert_pd_request_works(router_url: str, pair: EnginePair) -> None:
    """One disaggregated request succeeds and the decoder loads its KV."""
    decode = pair.decode.url
    before = metric(decode, EXTERNAL_HITS)
    resp = client(router_url).completions.create(
        model=MODEL, prompt=unique_prompt(), max_tokens=8, temperature=0.0, extra_body=IGNORE_EOS
    )
    assert resp.usage is not None and resp.usage.completion_tokens == 8
    hits = wait_for_value(lambda: metric(decode, EXTERNAL_HITS) - before, resp.usage.prompt_tokens)
    assert hits == resp.usage.prompt_tokens


def test_decode_engine_dies_during_stream(
    router: procs.ManagedProcess, healthy_pair: EnginePair
) -> None:
    stream = client(router.url).completions.create(
        model=MODEL,
        prompt=unique_prompt(),
        max_tokens=600,
        stream=True,
        temperature=0.0,
        extra_body=IGNORE_EOS,
    )
    started = time.monotonic()
    received = 0
    with pytest.raises(openai.APIError) as excinfo:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].text:
                received += 1
                if received == 3:
                    healthy_pair.decode.kill()
    elapsed = time.monotonic() - started

    assert received >= 3
    assert elapsed < CLIENT_DEADLINE
    # The stream had started (HTTP 200), so the router ends it with an SSE error event.
    body = excinfo.value.body
    error = body.get("error", body) if isinstance(body, dict) else {}
    print(f"\ndecode killed mid-stream: {error.get('code')} after {elapsed:.1f}s")
    assert error.get("code") in {"decode_failed", "timeout"}, excinfo.value

    healthy_pair.decode.start()
    healthy_pair.decode.wait_ready()
    wait_router_ready(router.url)
    assert_pd_request_works(router.url, healthy_pair)


def test_prefill_engine_down_before_request(
    router: procs.ManagedProcess, healthy_pair: EnginePair
) -> None:
    healthy_pair.prefill.kill()
    started = time.monotonic()
    resp = post(
        router.url + "/v1/completions",
        {"model": MODEL, "prompt": unique_prompt(), "max_tokens": 8},
        timeout=CLIENT_DEADLINE,
    )
    elapsed = time.monotonic() - started

    assert elapsed < CLIENT_DEADLINE
    assert resp.status_code in {502, 503}, resp.text
    error = resp.json()["error"]
    print(f"\nprefill down: HTTP {resp.status_code} {error['code']} after {elapsed:.1f}s")
    assert error["code"] in {"prefill_unavailable", "prefill_failed"}
    assert resp.headers["x-pdstack-pd-reason"] == error["code"]

    healthy_pair.prefill.start()
    healthy_pair.prefill.wait_ready()
    wait_router_ready(router.url)
    assert_pd_request_works(router.url, healthy_pair)
