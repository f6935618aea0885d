"""LMCache native PD through a router process, against fake engines whose prefiller behaves like an
LMCache 0.5.6 PD sender: a generation request without `disagg_spec` kills it. Every path that
could send one (conditional PD, capability fall-backs to the decoder, missing KV, decode errors,
aggregated routing) runs here, and the prefiller must still be alive at the end. Also the
fidelity of the split answer: token counts, a prefill that ends at its first token, fields that
cannot be split, and min_tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.doubles.engine_proc import FakeEngine
from tests.harness.router_proc import RouterProcess, free_port, static_args

pytestmark = pytest.mark.slow
LONG = "Tell me about the history of the printing press in Europe. " * 5  # > 20 tokens
SHORT = "Hi there"  # < 20 tokens: conditional PD sends it straight to the decoder
TOOLS = [
    {
        "type": "function",
        "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
    }
]


def generation_bodies(engine: FakeEngine) -> list[dict[str, Any]]:
    return [
        r["body"]
        for r in engine.stats()["recent"]
        if r["path"] in ("/v1/completions", "/v1/chat/completions")
    ]


def assert_sender_untouched(p: FakeEngine) -> None:
    """The prefiller is alive and every generation request it saw carried a disagg_spec."""
    assert p.alive, "the LMCache sender died: " + p.log_text()[-500:]
    for body in generation_bodies(p):
        spec = (body.get("kv_transfer_params") or {}).get("disagg_spec")
        assert isinstance(spec, dict), f"plain request reached the sender: {body}"


@pytest.fixture(scope="module")
def stack(fake_engine_factory_module: Any) -> Iterator[tuple[FakeEngine, FakeEngine, str]]:
    proxy_port = free_port()
    p = fake_engine_factory_module(
        role="prefill", lmcache_proxy_port=proxy_port, lmcache_pd_role="sender"
    )
    d = fake_engine_factory_module(role="decode", lmcache_pd_role="receiver")
    args = [
        *static_args([p, d], roles=["prefill", "decode"]),
        "--static-lmcache-init-ports",
        ",7300",
        "--static-lmcache-alloc-ports",
        ",7400",
        "--routing-logic",
        "disagg_prefill",
        "--kv-transport",
        "lmcache",
        "--pd-proxy-host",
        "127.0.0.1",
        "--pd-proxy-port",
        str(proxy_port),
        "--pd-kv-wait-timeout",
        "2",
        "--pd-min-prompt-tokens",
        "20",
        "--pd-on-missing-kv",
        "recompute",
    ]
    with RouterProcess(args).start() as router:
        yield p, d, router.url
    assert_sender_untouched(p)


@pytest.fixture
def lm(stack: tuple[FakeEngine, FakeEngine, str]) -> tuple[FakeEngine, FakeEngine, str]:
    p, d, url = stack
    assert p.alive, "an earlier test killed the LMCache sender"
    p.reset()
    d.reset()
    return p, d, url


def post(url: str, path: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(url + path, json={"model": "tiny", **body}, headers=headers, timeout=30)


def test_no_path_sends_the_sender_a_plain_request(
    lm: tuple[FakeEngine, FakeEngine, str],
) -> None:
    p, d, url = lm
    chat = "/v1/chat/completions"
    msgs = [{"role": "user", "content": LONG}]
    cases: list[tuple[str, str, dict[str, Any], dict[str, str]]] = [
        ("disaggregated", "/v1/completions", {"prompt": LONG, "max_tokens": 4}, {}),
        ("short prompt: direct", "/v1/completions", {"prompt": SHORT, "max_tokens": 4}, {}),
        ("tools: direct", chat, {"messages": msgs, "tools": TOOLS}, {}),
        ("max_tokens 1: direct", "/v1/completions", {"prompt": LONG, "max_tokens": 1}, {}),
        ("json output: direct", chat,
         {"messages": msgs, "response_format": {"type": "json_object"}}, {}),
        ("prefill returns no first_tok: recompute", "/v1/completions",
         {"prompt": LONG, "max_tokens": 4}, {"X-Fault": "no_kv_params;kind=lmcache_prefill"}),
        ("decoder fails", "/v1/completions", {"prompt": LONG, "max_tokens": 4},
         {"X-Fault": "http_error;status=503;kind=plain"}),
        ("prefiller fails", "/v1/completions", {"prompt": LONG, "max_tokens": 4},
         {"X-Fault": "http_error;status=503;kind=lmcache_prefill"}),
    ]  # fmt: skip
    for name, path, body, headers in cases:
        resp = post(url, path, body, **headers)
        assert resp.status_code in (200, 502, 503), (name, resp.text)
        assert p.alive, f"{name}: the sender died"
    assert_sender_untouched(p)
    # Everything that could not run disaggregated ran on the decoder, as the client sent it.
    assert any(b.get("tools") == TOOLS for b in generation_bodies(d))


FORWARDED = [
    ("/tokenize", {"prompt": SHORT}),
    ("/detokenize", {"tokens": [1, 2]}),
    ("/v1/embeddings", {"input": SHORT}),
    ("/pooling", {"input": SHORT}),
]


@pytest.mark.parametrize("logic", ["roundrobin", "disagg_prefill"])
def test_aggregated_routing_never_picks_a_sender(fake_engine_factory: Any, logic: str) -> None:
    """An LMCache PD pair whose decoder is gone: neither generation nor the forwarded routes
    (tokenizing, pooling) reach the sender; the client learns that no engine can serve."""
    p = fake_engine_factory(role="prefill", lmcache_pd_role="sender")
    args = [*static_args([p], roles=["prefill"]), "--routing-logic", logic]
    args += ["--kv-transport", "lmcache", "--pd-proxy-host", "127.0.0.1"]
    args += ["--pd-proxy-port", str(free_port())]  # PD mode binds the ZMQ listener
    with RouterProcess(args).start(wait_ready=False) as router:
        resp = post(router.url, "/v1/completions", {"prompt": LONG, "max_tokens": 4})
        assert resp.status_code == 503, resp.text
        assert resp.json()["error"]["code"] in ("no_ready_engine", "decode_unavailable")
        for path, body in FORWARDED:
            resp = post(router.url, path, body)
            assert resp.status_code == 503, (path, resp.text)
            assert resp.json()["error"]["code"] == "no_ready_engine"
    assert_sender_untouched(p)
    assert generation_bodies(p) == []
    assert not set(p.stats()["by_path"]) & {path for path, _ in FORWARDED}


def test_max_tokens_one_returns_one_token(lm: tuple[FakeEngine, FakeEngine, str]) -> None:
    p, _, url = lm
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
    out = client.completions.create(model="tiny", prompt=LONG, max_tokens=1)
    assert out.usage is not None and out.usage.completion_tokens == 1
    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": LONG}],
            max_completion_tokens=1,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage = [c.usage for c in chunks if c.usage]
    assert usage and usage[-1].completion_tokens == 1
    assert generation_bodies(p) == []  # no KV was pushed for an answer the prefill makes alone


@pytest.mark.parametrize("stream", [False, True])
def test_prefill_that_stops_at_its_first_token_is_the_answer(
    lm: tuple[FakeEngine, FakeEngine, str], stream: bool
) -> None:
    p, d, url = lm
    p.admin_config(eos_after=1)  # the first token is EOS
    d.admin_config(eos_after=1)
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
    messages = [{"role": "user", "content": LONG}]
    alone = httpx.post(
        d.url + "/v1/chat/completions",
        json={"model": "tiny", "messages": messages, "max_tokens": 8},
        timeout=30,
    ).json()
    d.reset()
    if stream:
        chunks = list(
            client.chat.completions.create(
                model="tiny",
                messages=messages,  # type: ignore[arg-type]
                max_tokens=8,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
        completion = [c.usage for c in chunks if c.usage][-1].completion_tokens  # type: ignore[union-attr]
    else:
        out = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8)  # type: ignore[arg-type]
        text, finish = out.choices[0].message.content, out.choices[0].finish_reason
        completion = out.usage.completion_tokens  # type: ignore[union-attr]
    assert (text, finish, completion) == (
        alone["choices"][0]["message"]["content"],
        "stop",
        alone["usage"]["completion_tokens"],
    )
    assert generation_bodies(d) == []  # nothing was continued
    assert len(generation_bodies(p)) == 1


def test_fields_that_cannot_be_split_run_on_the_decoder(
    lm: tuple[FakeEngine, FakeEngine, str],
) -> None:
    p, d, url = lm
    messages = [{"role": "user", "content": LONG}]
    body = {"messages": messages, "tools": TOOLS, "tool_choice": "required", "max_tokens": 4}
    assert post(url, "/v1/chat/completions", body).status_code == 200
    n2 = post(url, "/v1/completions", {"prompt": LONG, "n": 2, "max_tokens": 4})
    assert n2.status_code == 200, n2.text
    assert len(n2.json()["choices"]) == 2  # the decoder made both sequences
    sent = generation_bodies(d)
    assert sent[0]["tools"] == TOOLS and sent[0]["tool_choice"] == "required"
    assert sent[1]["n"] == 2
    assert generation_bodies(p) == []


def test_template_fields_reach_the_tokenizer(lm: tuple[FakeEngine, FakeEngine, str]) -> None:
    p, _, url = lm
    kwargs = {"enable_thinking": False}
    body = {
        "messages": [{"role": "user", "content": LONG}],
        "chat_template_kwargs": kwargs,
        "max_tokens": 4,
    }
    assert post(url, "/v1/chat/completions", body).status_code == 200
    tokenize = [r["body"] for r in p.stats()["recent"] if r["path"] == "/tokenize"]
    assert tokenize[-1]["chat_template_kwargs"] == kwargs
    assert len(generation_bodies(p)) == 1  # and it ran disaggregated


def test_min_tokens_is_split_between_the_legs(lm: tuple[FakeEngine, FakeEngine, str]) -> None:
    p, d, url = lm
    resp = post(url, "/v1/completions", {"prompt": LONG, "max_tokens": 8, "min_tokens": 5})
    assert resp.status_code == 200, resp.text
    assert resp.json()["usage"]["completion_tokens"] == 8
    (prefill,) = generation_bodies(p)
    (decode,) = generation_bodies(d)
    assert (prefill["max_tokens"], prefill["min_tokens"]) == (1, 1)
    assert (decode["max_tokens"], decode["min_tokens"]) == (7, 4)


def test_a_clients_kv_transfer_params_are_refused(lm: tuple[FakeEngine, FakeEngine, str]) -> None:
    p, d, url = lm
    spec = {"disagg_spec": {"req_id": "x", "receiver_host": "10.0.0.1"}}
    resp = post(url, "/v1/completions", {"prompt": LONG, "kv_transfer_params": spec})
    assert resp.status_code == 400
    assert "kv_transfer_params" in resp.json()["error"]["message"]
    assert generation_bodies(p) == [] and generation_bodies(d) == []


@pytest.mark.parametrize("fields", [{"use_beam_search": True}, {"min_tokens": "2"}])
def test_what_no_transport_can_split_runs_on_the_decoder(
    lm: tuple[FakeEngine, FakeEngine, str], fields: dict[str, Any]
) -> None:
    """The rules every transport shares (beam search; a field in a type only the engine reads)
    apply after LMCache's own capability check: the request runs on the decoder alone."""
    p, d, url = lm
    post(url, "/v1/completions", {"prompt": LONG, "max_tokens": 4, **fields})
    assert generation_bodies(p) == []
    (decode,) = generation_bodies(d)
    assert decode["prompt"] == LONG and "kv_transfer_params" not in decode
