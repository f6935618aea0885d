"""NIXL-style prefill -> decode between two fake engine processes, as vLLM's toy proxy does it."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from tests.doubles.engine_proc import FakeEngine

PROMPT = "The capital of France is a city with a long history and many museums"
PREFILL_PARAMS = {
    "do_remote_decode": True,
    "do_remote_prefill": False,
    "remote_engine_id": None,
    "remote_block_ids": None,
    "remote_host": None,
    "remote_port": None,
}


@pytest.fixture(scope="module")
def shared_pair(module_engines) -> tuple[FakeEngine, FakeEngine]:  # type: ignore[no-untyped-def]
    p = module_engines(role="prefill", engine_id="P-engine")
    d = module_engines(role="decode", engine_id="D-engine")
    return p, d


@pytest.fixture
def pair(shared_pair: tuple[FakeEngine, FakeEngine]) -> tuple[FakeEngine, FakeEngine]:
    """A prefill and a decode engine, reset to their startup knobs for each test."""
    for engine in shared_pair:
        engine.reset()
    return shared_pair


def complete(
    engine: FakeEngine, body: dict[str, Any], path: str = "/v1/completions"
) -> httpx.Response:
    return httpx.post(engine.url + path, json=body, headers={"X-Request-Id": "req-1"}, timeout=10)


def prefill(p: FakeEngine, **extra: Any) -> dict[str, Any]:
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 1, "stream": False}
    r = complete(p, {**body, "kv_transfer_params": PREFILL_PARAMS, **extra})
    assert r.status_code == 200, r.text
    return dict(r.json())


def metric(engine: FakeEngine, name: str) -> float:
    line = next(x for x in engine.metrics_text().splitlines() if x.startswith(name + "{"))
    return float(line.rsplit(" ", 1)[1])


def test_prefill_returns_vllm_like_kv_params(pair: tuple[FakeEngine, FakeEngine]) -> None:
    p, _ = pair
    out = prefill(p)
    kv = out["kv_transfer_params"]
    assert kv["do_remote_prefill"] is True and kv["do_remote_decode"] is False
    assert kv["remote_engine_id"] == "P-engine"
    assert kv["remote_host"] == "127.0.0.1" and kv["remote_port"] == p.port
    assert kv["tp_size"] == 1 and kv["remote_num_tokens"] == out["usage"]["prompt_tokens"]
    assert isinstance(kv["remote_block_ids"], list) and isinstance(kv["remote_block_ids"][0], list)
    assert kv["remote_request_id"].startswith("cmpl-req-1-")
    assert out["usage"]["completion_tokens"] == 1
    assert p.stats()["kv_held"] == 1 and p.stats()["by_kind"] == {"prefill": 1}


@pytest.mark.parametrize("stream", [False, True])
def test_decode_pulls_kv_and_matches_plain_output(
    pair: tuple[FakeEngine, FakeEngine], stream: bool
) -> None:
    p, d = pair
    kv = prefill(p)["kv_transfer_params"]
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 8}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    r = complete(d, {**body, "kv_transfer_params": kv})
    assert r.status_code == 200
    plain = complete(p, {"model": "tiny", "prompt": PROMPT, "max_tokens": 8}).json()
    n_prompt = plain["usage"]["prompt_tokens"]
    if stream:
        events = [json.loads(x[6:]) for x in r.text.split("\n\n") if x.startswith("data: {")]
        text = "".join(e["choices"][0]["text"] for e in events if e["choices"])
        usage = events[-1]["usage"]
    else:
        text, usage = r.json()["choices"][0]["text"], r.json()["usage"]
    assert text == plain["choices"][0]["text"]  # P/D equivalence (greedy determinism)
    assert usage["prompt_tokens_details"]["cached_tokens"] == n_prompt
    assert metric(d, "vllm:external_prefix_cache_hits_total") == n_prompt
    assert p.stats()["kv_held"] == 0 and p.stats()["kv_pulls_served"] == 1  # pull released it
    assert d.stats()["by_kind"] == {"decode": 1}


def test_chat_prefill_decode(pair: tuple[FakeEngine, FakeEngine]) -> None:
    p, d = pair
    msgs = [{"role": "user", "content": "hello there"}]
    pre = complete(
        p,
        {"model": "tiny", "messages": msgs, "max_tokens": 1, "kv_transfer_params": PREFILL_PARAMS},
        "/v1/chat/completions",
    ).json()
    body = {"model": "tiny", "messages": msgs, "max_tokens": 5}
    dec = complete(
        d, {**body, "kv_transfer_params": pre["kv_transfer_params"]}, "/v1/chat/completions"
    )
    plain = complete(p, body, "/v1/chat/completions")
    assert dec.json()["choices"][0]["message"] == plain.json()["choices"][0]["message"]


def test_prefill_rejects_streaming(pair: tuple[FakeEngine, FakeEngine]) -> None:
    p, _ = pair
    body = {"model": "tiny", "prompt": PROMPT, "stream": True, "kv_transfer_params": PREFILL_PARAMS}
    r = complete(p, body)
    assert r.status_code == 400 and "streaming" in r.json()["error"]["message"]


def test_second_pull_fails_with_fail_policy(pair: tuple[FakeEngine, FakeEngine]) -> None:
    p, d = pair
    kv = prefill(p)["kv_transfer_params"]
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 4, "kv_transfer_params": kv}
    assert complete(d, body).status_code == 200
    again = complete(d, body)  # the KV was released by the first pull
    assert again.status_code == 500 and again.json()["error"]["type"] == "InternalServerError"
    assert d.stats()["kv_loads_failed"] == 1


def test_recompute_policy_generates_without_external_hits(
    pair: tuple[FakeEngine, FakeEngine],
) -> None:
    p, d = pair
    d.admin_config(kv_load_failure_policy="recompute")
    kv = prefill(p)["kv_transfer_params"]
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 4, "kv_transfer_params": kv}
    r = httpx.post(
        d.url + "/v1/completions", json=body, headers={"X-Fault": "kv_expired"}, timeout=10
    )
    assert r.status_code == 200
    assert r.json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert metric(d, "vllm:external_prefix_cache_hits_total") == 0


def test_kv_expired_fault_and_lease_expiry(pair: tuple[FakeEngine, FakeEngine]) -> None:
    p, d = pair
    kv = prefill(p)["kv_transfer_params"]
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 4, "kv_transfer_params": kv}
    r = httpx.post(d.url + "/v1/completions", json=body, headers={"X-Fault": "kv_expired"})
    assert r.status_code == 500
    assert p.stats()["kv_held"] == 1  # a decode that gives up strands the prefill's KV
    p.admin_config(kv_lease_seconds=0.2)
    kv = prefill(p)["kv_transfer_params"]
    assert p.stats()["kv_held"] == 2
    time.sleep(0.4)
    assert p.stats()["kv_held"] == 1  # the short lease ended; the 30 s one still holds
    r = complete(d, {**body, "kv_transfer_params": kv})
    assert r.status_code == 500


def test_no_kv_params_fault(pair: tuple[FakeEngine, FakeEngine]) -> None:
    p, _ = pair
    p.set_faults(no_kv_params={"count": 1})
    assert prefill(p)["kv_transfer_params"] is None
    assert prefill(p)["kv_transfer_params"] is not None


def test_decode_checks_engine_id_and_prompt(pair: tuple[FakeEngine, FakeEngine]) -> None:
    p, d = pair
    kv = prefill(p)["kv_transfer_params"]
    wrong = {**kv, "remote_engine_id": "someone-else"}
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 2}
    assert complete(d, {**body, "kv_transfer_params": wrong}).status_code == 500
    kv = prefill(p)["kv_transfer_params"]
    other = {**body, "prompt": "a different prompt", "kv_transfer_params": kv}
    assert complete(d, other).status_code == 500  # KV of another prompt is not a hit


def test_decode_unreachable_prefill(fake_engine_factory, pair) -> None:  # type: ignore[no-untyped-def]
    _, d = pair
    p = fake_engine_factory(role="prefill")
    kv = prefill(p)["kv_transfer_params"]
    p.kill()
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 2, "kv_transfer_params": kv}
    assert complete(d, body).status_code == 500


def test_localhost_side_channel_makes_decode_talk_to_itself(
    pair: tuple[FakeEngine, FakeEngine],
) -> None:
    p, d = pair
    p.admin_config(side_channel_host="localhost")  # vLLM's default, wrong across pods
    kv = prefill(p)["kv_transfer_params"]
    assert kv["remote_host"] == "localhost"
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 2}
    assert complete(d, {**body, "kv_transfer_params": kv}).status_code == 500
    fixed = {**kv, "remote_host": "127.0.0.1"}  # what --pd-override-remote-host does
    assert complete(d, {**body, "kv_transfer_params": fixed}).status_code == 200
