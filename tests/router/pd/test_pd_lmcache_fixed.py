"""disagg_prefill over LMCache's native PD protocol and the fixed-peer mode (fake engines)."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.harness.router_proc import RouterProcess, free_port

pytestmark = pytest.mark.slow
PROMPT = "Tell me about the history of the printing press in Europe. " * 5


def lmcache_stack(fake_engine_factory, tp: int = 2, notify_delay_ms: int = 30):  # type: ignore[no-untyped-def]
    proxy_port = free_port()
    p = fake_engine_factory(
        models=["tiny"],
        role="prefill",
        tp_size=tp,
        lmcache_proxy_port=proxy_port,
        lmcache_notify_delay_ms=notify_delay_ms,
    )
    d = fake_engine_factory(models=["tiny"], role="decode", itl_ms=10)
    ports = ";".join(str(7300 + i) for i in range(tp))
    alloc = ";".join(str(7400 + i) for i in range(tp))
    args = [
        "--static-backends",
        f"{p.url},{d.url}",
        "--static-models",
        "tiny,tiny",
        "--static-roles",
        "prefill,decode",
        "--static-lmcache-init-ports",
        f",{ports}",
        "--static-lmcache-alloc-ports",
        f",{alloc}",
        "--routing-logic",
        "disagg_prefill",
        "--kv-transport",
        "lmcache",
        "--pd-proxy-host",
        "127.0.0.1",
        "--pd-proxy-port",
        str(proxy_port),
        "--pd-kv-wait-timeout",
        "1",
    ]
    return p, d, RouterProcess(args)


def test_lmcache_completions_and_chat_stream_and_not(fake_engine_factory) -> None:  # type: ignore[no-untyped-def]
    p, d, router = lmcache_stack(fake_engine_factory)
    with router.start() as r:
        client = openai.OpenAI(base_url=r.url + "/v1", api_key="x")
        reference = httpx.post(
            d.url + "/v1/completions",
            timeout=30,
            json={"model": "tiny", "prompt": PROMPT, "max_tokens": 6, "temperature": 0},
        ).json()
        full = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=6, temperature=0)
        assert full.choices[0].text == reference["choices"][0]["text"]
        assert full.usage is not None and full.usage.completion_tokens == 6
        streamed = "".join(
            c.choices[0].text
            for c in client.completions.create(
                model="tiny", prompt=PROMPT, max_tokens=6, stream=True
            )
            if c.choices
        )
        assert streamed == full.choices[0].text
        chat = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": PROMPT}], max_tokens=5
        )
        assert chat.object == "chat.completion" and chat.choices[0].message.content
        chunks = list(
            client.chat.completions.create(
                model="tiny",
                messages=[{"role": "user", "content": PROMPT}],
                max_tokens=5,
                stream=True,
            )
        )
        assert all(c.object == "chat.completion.chunk" for c in chunks)
        assert (
            "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            == chat.choices[0].message.content
        )
        assert r.metric("pdstack_router_pd_decisions_total", decision="disaggregated") == 4
    spec = p.stats()["recent"][-1]["body"]["kv_transfer_params"]["disagg_spec"]
    assert spec["receiver_host"] == "127.0.0.1"
    assert spec["receiver_init_port"] == [7300, 7301]
    dec = d.stats()["recent"][-1]["body"]
    assert isinstance(dec["prompt"], list) and dec["max_tokens"] == 4


def test_lmcache_missing_notification_times_out_quickly(fake_engine_factory) -> None:  # type: ignore[no-untyped-def]
    p, d, router = lmcache_stack(fake_engine_factory)
    p.set_faults(lmcache_partial_notify={})
    with router.start() as r:
        started = time.monotonic()
        resp = httpx.post(
            r.url + "/v1/completions",
            timeout=30,
            json={"model": "tiny", "prompt": PROMPT, "max_tokens": 4, "stream": True},
        )
        elapsed = time.monotonic() - started
        assert resp.status_code == 504 and resp.json()["error"]["code"] == "timeout"
        assert resp.headers["x-pdstack-pd-phase"] == "kv_transfer"
        assert elapsed < 3
    assert d.stats()["by_path"] == {}  # never sent to the decoder


def test_fixed_peer_mode_sends_same_request_to_both(fake_engine_factory) -> None:  # type: ignore[no-untyped-def]
    p = fake_engine_factory(models=["tiny"], role="prefill")
    d = fake_engine_factory(models=["tiny"], role="decode")
    args = [
        "--static-backends",
        f"{p.url},{d.url}",
        "--static-models",
        "tiny,tiny",
        "--static-roles",
        "prefill,decode",
        "--routing-logic",
        "disagg_prefill",
        "--kv-transport",
        "fixed",
    ]
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 5, "stream": True}
    with RouterProcess(args).start() as r:
        resp = httpx.post(r.url + "/v1/completions", json=body, timeout=30)
        assert resp.status_code == 200 and resp.text.endswith("data: [DONE]\n\n")
    p_body = p.stats()["recent"][-1]["body"]
    assert p_body["max_tokens"] == 1 and p_body["stream"] is False
    assert "kv_transfer_params" not in p_body
    assert d.stats()["recent"][-1]["body"] == body
