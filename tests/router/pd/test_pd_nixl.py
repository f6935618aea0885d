"""disagg_prefill over the NIXL protocol: router process + fake prefill/decode processes."""

from __future__ import annotations

import concurrent.futures
import time

import httpx
import openai
import pytest

from tests.harness.router_proc import RouterProcess, static_args

pytestmark = pytest.mark.slow
PROMPT = "The quick brown fox jumps over the lazy dog. " * 20


def pd_router(prefills, decodes, *extra: str) -> RouterProcess:  # type: ignore[no-untyped-def]
    engines = [*prefills, *decodes]
    roles = ["prefill"] * len(prefills) + ["decode"] * len(decodes)
    args = [
        *static_args(engines, roles=roles),
        "--routing-logic",
        "disagg_prefill",
        "--engine-scrape-interval",
        "0.5",
        *extra,
    ]
    return RouterProcess(args).start()


def kinds(engine) -> dict:  # type: ignore[no-untyped-def, type-arg]
    return engine.stats()["by_kind"]


def test_2p2d_spreads_load_and_hands_params_over(fake_engine_factory) -> None:  # type: ignore[no-untyped-def]
    prefills = [fake_engine_factory(models=["tiny"], role="prefill", ttft_ms=20) for _ in range(2)]
    decodes = [fake_engine_factory(models=["tiny"], role="decode", itl_ms=5) for _ in range(2)]
    with pd_router(prefills, decodes) as r:

        def one(i: int) -> int:
            body = {
                "model": "tiny",
                "prompt": f"{i} {PROMPT}",
                "max_tokens": 8,
                "stream": i % 2 == 0,
            }
            return httpx.post(r.url + "/v1/completions", json=body, timeout=30).status_code

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(one, range(40)))
        assert statuses == [200] * 40
        assert r.metric("pdstack_router_pd_decisions_total", decision="disaggregated") == 40
        assert r.metric("pdstack_router_pd_handoff_seconds_count") == 40
    p_counts = [kinds(p).get("prefill", 0) for p in prefills]
    d_counts = [kinds(d).get("decode", 0) for d in decodes]
    assert sum(p_counts) == 40 and sum(d_counts) == 40
    assert min(p_counts) >= 8 and min(d_counts) >= 8, (p_counts, d_counts)
    # every decode really loaded the KV its prefill held (the fake pulls it from the prefill)
    assert sum(d.stats()["kv_loads_ok"] for d in decodes) == 40
    assert sum(p.stats()["kv_pulls_served"] for p in prefills) == 40


def test_legs_carry_the_documented_bodies_and_one_request_id(fake_engine_factory) -> None:  # type: ignore[no-untyped-def]
    p = fake_engine_factory(models=["tiny"], role="prefill")
    d = fake_engine_factory(models=["tiny"], role="decode")
    client_body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 6,
        "stream": True,
        "stream_options": {"include_usage": True},
        "min_tokens": 2,
    }
    with pd_router([p], [d], "--pd-override-remote-host") as r:
        resp = httpx.post(
            r.url + "/v1/chat/completions",
            json=client_body,
            headers={"x-request-id": "req-42"},
            timeout=30,
        )
        assert resp.status_code == 200 and resp.headers["x-request-id"] == "req-42"
    p_req = p.stats()["recent"][-1]
    d_req = d.stats()["recent"][-1]
    # Both legs carry the router's id for this request (never the client's, which need not be
    # unique: vLLM and NIXL key a request's state on it).
    assert p_req["headers"]["x-request-id"] == d_req["headers"]["x-request-id"] != "req-42"
    pb = p_req["body"]
    assert pb["stream"] is False and pb["max_tokens"] == 1
    assert "stream_options" not in pb and "min_tokens" not in pb
    assert pb["kv_transfer_params"]["do_remote_decode"] is True
    db = d_req["body"]
    params = db.pop("kv_transfer_params")
    assert db == client_body  # the client's own body, untouched
    assert params["remote_engine_id"] == p.stats()["engine_id"]
    assert params["remote_host"] == "127.0.0.1"


def test_pd_output_equals_single_engine_output_and_streams(fake_engine_factory) -> None:  # type: ignore[no-untyped-def]
    p = fake_engine_factory(models=["tiny"], role="prefill")
    d = fake_engine_factory(models=["tiny"], role="decode", itl_ms=40)
    with pd_router([p], [d]) as r:
        client = openai.OpenAI(base_url=r.url + "/v1", api_key="x")
        whole = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=6, temperature=0)
        direct = httpx.post(
            d.url + "/v1/completions",
            timeout=30,
            json={"model": "tiny", "prompt": PROMPT, "max_tokens": 6},
        ).json()
        assert whole.choices[0].text == direct["choices"][0]["text"]
        arrivals, text = [], ""
        for chunk in client.completions.create(
            model="tiny", prompt=PROMPT, max_tokens=6, stream=True
        ):
            if chunk.choices and chunk.choices[0].text:
                arrivals.append(time.monotonic())
                text += chunk.choices[0].text
        assert text == whole.choices[0].text
        assert len(arrivals) == 6 and arrivals[-1] - arrivals[0] > 0.1
        assert r.metric("pdstack_router_ttft_seconds_count") >= 1


def test_cached_tokens_reflect_the_prefill_leg(fake_engine_factory) -> None:  # type: ignore[no-untyped-def]
    p = fake_engine_factory(models=["tiny"], role="prefill", block_size=4)
    d = fake_engine_factory(models=["tiny"], role="decode")
    with pd_router([p], [d]) as r:
        body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 3}
        first = httpx.post(r.url + "/v1/completions", json=body, timeout=30).json()
        second = httpx.post(r.url + "/v1/completions", json=body, timeout=30).json()
    # the decoder loaded every prompt token externally; the client must see the prefill's cache
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert (
        0
        < second["usage"]["prompt_tokens_details"]["cached_tokens"]
        < second["usage"]["prompt_tokens"]
    )


def test_short_prompts_skip_prefill(fake_engine_factory) -> None:  # type: ignore[no-untyped-def]
    p = fake_engine_factory(models=["tiny"], role="prefill")
    d = fake_engine_factory(models=["tiny"], role="decode")
    with pd_router([p], [d], "--pd-min-prompt-tokens", "50") as r:
        short = httpx.post(
            r.url + "/v1/completions",
            timeout=30,
            json={"model": "tiny", "prompt": "hi", "max_tokens": 2},
        )
        long = httpx.post(
            r.url + "/v1/completions",
            timeout=30,
            json={"model": "tiny", "prompt": PROMPT, "max_tokens": 2},
        )
        assert short.status_code == long.status_code == 200
        assert r.metric("pdstack_router_pd_decisions_total", decision="direct") == 1
        assert r.metric("pdstack_router_pd_decisions_total", decision="disaggregated") == 1
    assert kinds(p) == {"prefill": 1}
    assert kinds(d) == {"plain": 1, "decode": 1}


def test_prefill_failure_is_retried_on_another_prefill(fake_engine_factory) -> None:  # type: ignore[no-untyped-def]
    bad = fake_engine_factory(models=["tiny"], role="prefill")
    good = fake_engine_factory(models=["tiny"], role="prefill", ttft_ms=5)
    d = fake_engine_factory(models=["tiny"], role="decode")
    bad.set_faults(http_error={"status": 503})
    # `good` reports a queue longer than `bad`'s recent failures (which count as load), so
    # the scheduler tries `bad` first every time
    good.admin_config(metrics_override={"vllm:num_requests_waiting": 10})
    with pd_router([bad, good], [d]) as r:
        for i in range(4):
            resp = httpx.post(
                r.url + "/v1/completions",
                timeout=30,
                json={"model": "tiny", "prompt": f"{i} {PROMPT}", "max_tokens": 2},
            )
            assert resp.status_code == 200, resp.text
        assert r.metric("pdstack_router_retries_total", phase="prefill") == 4
    assert kinds(good) == {"prefill": 4}


def test_prefill_timeout_answers_within_deadline(fake_engine_factory) -> None:  # type: ignore[no-untyped-def]
    p = fake_engine_factory(models=["tiny"], role="prefill")
    d = fake_engine_factory(models=["tiny"], role="decode")
    p.set_faults(hang={})
    with pd_router([p], [d], "--prefill-timeout", "1", "--prefill-max-retries", "0") as r:
        started = time.monotonic()
        resp = httpx.post(
            r.url + "/v1/completions",
            timeout=30,
            json={"model": "tiny", "prompt": PROMPT, "max_tokens": 2, "stream": True},
        )
        elapsed = time.monotonic() - started
        assert resp.status_code == 504
        assert resp.json()["error"]["code"] == "timeout"
        assert resp.headers["x-pdstack-pd-reason"] == "timeout"
        assert resp.headers["x-pdstack-pd-phase"] == "prefill"
        assert resp.headers["x-pdstack-retryable"] == "true"
        assert elapsed < 3, elapsed
        assert r.metric("pdstack_router_engine_in_flight") == 0
    print(f"prefill timeout answered in {elapsed:.2f}s with a 1s deadline")


def test_missing_kv_params_fail_or_recompute(fake_engine_factory) -> None:  # type: ignore[no-untyped-def]
    p = fake_engine_factory(models=["tiny"], role="prefill")
    d = fake_engine_factory(models=["tiny"], role="decode")
    p.set_faults(no_kv_params={})
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 2}
    with pd_router([p], [d]) as r:
        resp = httpx.post(r.url + "/v1/completions", json=body, timeout=30)
        assert resp.status_code == 502 and resp.json()["error"]["code"] == "kv_transfer_missing"
        assert r.metric("pdstack_router_pd_missing_kv_total", action="fail") == 1
    with pd_router([p], [d], "--pd-on-missing-kv", "recompute") as r:
        resp = httpx.post(r.url + "/v1/completions", json=body, timeout=30)
        assert resp.status_code == 200
        assert r.metric("pdstack_router_pd_decisions_total", decision="recompute") == 1
    assert d.stats()["recent"][-1]["body"] == body  # recompute: the client's own request


def test_decode_dying_mid_stream_ends_with_typed_sse_error(fake_engine_factory) -> None:  # type: ignore[no-untyped-def]
    p = fake_engine_factory(models=["tiny"], role="prefill")
    d = fake_engine_factory(models=["tiny"], role="decode")
    d.set_faults(die_mid_stream={"after_chunks": 2})
    with pd_router([p], [d]) as r:
        resp = httpx.post(
            r.url + "/v1/completions",
            timeout=30,
            json={"model": "tiny", "prompt": PROMPT, "max_tokens": 8, "stream": True},
        )
        events = [e for e in resp.text.split("\n\n") if e.strip()]
        assert resp.status_code == 200
        assert '"code":"decode_failed"' in events[-2] and events[-1] == "data: [DONE]"


def test_no_prefill_engine_readiness_and_fallback(fake_engine_factory) -> None:  # type: ignore[no-untyped-def]
    p = fake_engine_factory(models=["tiny"], role="prefill")
    d = fake_engine_factory(models=["tiny"], role="decode")
    fast = ["--engine-scrape-interval", "0.2", "--health-failure-threshold", "1"]
    with pd_router([p], [d], *fast) as r:
        p.set_faults(health_fail={})
        deadline = time.monotonic() + 5
        while httpx.get(r.url + "/ready").status_code != 503:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        resp = httpx.post(r.url + "/v1/completions", json={"model": "tiny", "prompt": "x"})
        assert resp.status_code == 503 and resp.json()["error"]["code"] == "prefill_unavailable"
        assert resp.headers["x-pdstack-pd-phase"] == "prefill"
    with pd_router([p], [d], *fast, "--pd-fallback", "aggregated") as r:
        time.sleep(0.5)
        assert httpx.get(r.url + "/ready").status_code == 200
        resp = httpx.post(r.url + "/v1/completions", json={"model": "tiny", "prompt": "x"})
        assert resp.status_code == 200
        assert r.metric("pdstack_router_pd_decisions_total", decision="fallback") == 1
