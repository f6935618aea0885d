"""LMCache native PD: first_tok in the prefill answer, ProxyNotif per TP rank over ZMQ."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import msgspec

from tests.doubles.engine_parts.kv import encode_proxy_notif
from tests.doubles.engine_proc import FakeEngine
from tests.doubles.fixtures import ProxyNotifSink

PROMPT = "Summarize the plot of a long novel about the sea"


def lmcache_prefill(p: FakeEngine, tokens: list[int], req_id: str, **extra: Any) -> httpx.Response:
    spec = {
        "req_id": req_id,
        "receiver_host": "127.0.0.1",
        "receiver_init_port": [7300, 7301],
        "receiver_alloc_port": [7400, 7401],
    }
    body = {
        "model": "tiny",
        "prompt": tokens,
        "max_tokens": 1,
        "stream": False,
        "kv_transfer_params": {"ret_first_tok": True, "disagg_spec": spec},
    }
    return httpx.post(p.url + "/v1/completions", json=body, timeout=10, **extra)


def tokenize(engine: FakeEngine, prompt: str) -> list[int]:
    return list(httpx.post(engine.url + "/tokenize", json={"prompt": prompt}).json()["tokens"])


def test_encoding_matches_lmcache_tagged_struct() -> None:
    # LMCache: class PDMsgBase(msgspec.Struct, tag=True); class ProxyNotif(PDMsgBase): req_id
    raw = encode_proxy_notif("42")
    assert msgspec.msgpack.decode(raw) == {"type": "ProxyNotif", "req_id": "42"}


def test_prefill_notifies_each_tp_rank_and_decode_continues(
    fake_engine_factory,
    lmcache_proxy_sink: ProxyNotifSink,  # type: ignore[no-untyped-def]
) -> None:
    p = fake_engine_factory(role="prefill", tp_size=2, lmcache_proxy_port=lmcache_proxy_sink.port)
    d = fake_engine_factory(role="decode")
    tokens = tokenize(p, PROMPT)
    r = lmcache_prefill(p, tokens, "req-7")
    assert r.status_code == 200
    first_tok = r.json()["kv_transfer_params"]["first_tok"]
    assert isinstance(first_tok, int)
    assert lmcache_proxy_sink.wait_for("req-7", 2) == 2
    assert p.stats()["by_kind"] == {"tokenize": 1, "lmcache_prefill": 1}
    # Decode: prompt tokens + first token, max_tokens - 1, streamed (as LMCache's proxy does).
    body = {"model": "tiny", "prompt": [*tokens, first_tok], "max_tokens": 5, "stream": True}
    dec = httpx.post(d.url + "/v1/completions", json=body, timeout=10)
    events = [json.loads(x[6:]) for x in dec.text.split("\n\n") if x.startswith("data: {")]
    rest = "".join(e["choices"][0]["text"] for e in events)
    plain = httpx.post(
        d.url + "/v1/completions", json={"model": "tiny", "prompt": PROMPT, "max_tokens": 6}
    ).json()["choices"][0]["text"]
    assert r.json()["choices"][0]["text"] + rest == plain


def test_partial_and_no_notify(
    fake_engine_factory,
    lmcache_proxy_sink: ProxyNotifSink,  # type: ignore[no-untyped-def]
) -> None:
    p = fake_engine_factory(tp_size=2, lmcache_proxy_port=lmcache_proxy_sink.port)
    tokens = tokenize(p, PROMPT)
    lmcache_prefill(p, tokens, "none", headers={"X-Fault": "lmcache_no_notify"})
    lmcache_prefill(p, tokens, "half", headers={"X-Fault": "lmcache_partial_notify"})
    lmcache_prefill(p, tokens, "full")
    assert lmcache_proxy_sink.wait_for("full", 2) == 2
    assert lmcache_proxy_sink.wait_for("half", 2, timeout=0.5) == 1
    assert lmcache_proxy_sink.received.count("none") == 0


def test_notify_delay_and_live_proxy_port(
    fake_engine_factory,
    lmcache_proxy_sink: ProxyNotifSink,  # type: ignore[no-untyped-def]
) -> None:
    p = fake_engine_factory()
    p.admin_config(lmcache_proxy_port=lmcache_proxy_sink.port, lmcache_notify_delay_ms=1000)
    lmcache_prefill(p, tokenize(p, PROMPT), "late")
    assert lmcache_proxy_sink.received == []  # not yet: the notification comes after the delay
    assert lmcache_proxy_sink.wait_for("late", 1) == 1


def test_a_pd_sender_dies_on_a_request_without_disagg_spec(
    fake_engine_factory,
    lmcache_proxy_sink: ProxyNotifSink,  # type: ignore[no-untyped-def]
) -> None:
    """Like LMCache 0.5.6 on a GPU: tokenize and PD prefills are fine, a plain request kills."""
    p = fake_engine_factory(lmcache_proxy_port=lmcache_proxy_sink.port, lmcache_pd_role="sender")
    tokens = tokenize(p, PROMPT)
    assert lmcache_prefill(p, tokens, "ok").status_code == 200
    bad = httpx.post(p.url + "/v1/completions", json={"model": "tiny", "prompt": PROMPT})
    assert bad.status_code == 500 and "fatal" in bad.json()["error"]["message"]
    deadline = time.monotonic() + 5
    while p.alive and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not p.alive
