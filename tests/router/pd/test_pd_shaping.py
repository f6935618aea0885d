"""What each PD leg carries: output-side fields stay off the prefill, requests PD cannot serve
run on one engine, vLLM's rules are checked before any prefill, engine request ids.

One 1P1D router process over fake engine processes (test doubles), shared by the module; the
prefill fake behaves like vLLM for `n` > 1 (it holds KV for every sequence but hands back one
set of params, so the rest stays held until the lease ends).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.doubles.engine_proc import FakeEngine
from tests.doubles.fixtures import make_fake_engine_fixture
from tests.harness.router_proc import RouterProcess, static_args

pytestmark = pytest.mark.slow
PROMPT = "The quick brown fox jumps over the lazy dog. " * 8
OUTPUT_FIELDS = ("n", "best_of", "echo", "logprobs", "top_logprobs", "logprob_token_ids")
engines_module = make_fake_engine_fixture("module")


class Pair:
    def __init__(self, factory: Any) -> None:
        self.p: FakeEngine = factory(models=["tiny"], role="prefill")
        self.d: FakeEngine = factory(models=["tiny"], role="decode")
        args = [
            *static_args([self.p, self.d], roles=["prefill", "decode"]),
            "--routing-logic",
            "disagg_prefill",
            "--engine-scrape-interval",
            "60",
            "--log-requests",
        ]
        self.router = RouterProcess(args).start()

    def reset(self) -> None:
        self.p.reset()
        self.d.reset()

    def post(self, api: str, body: dict[str, Any], **kw: Any) -> httpx.Response:
        path = "/v1/chat/completions" if api == "chat" else "/v1/completions"
        return httpx.post(self.router.url + path, json=body, timeout=30, **kw)


@pytest.fixture(scope="module")
def pair(engines_module: Any) -> Iterator[Pair]:
    pair = Pair(engines_module)
    try:
        yield pair
    finally:
        pair.router.stop()


def _body(api: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "tiny", "max_tokens": 4, **fields}
    if api == "chat":
        body["messages"] = [{"role": "user", "content": PROMPT}]
    else:
        body["prompt"] = PROMPT
    return body


def _choice_indexes(resp: httpx.Response, stream: bool) -> list[int]:
    if not stream:
        return sorted(c["index"] for c in resp.json()["choices"])
    seen = set()
    for line in resp.text.split("\n"):
        if line.startswith("data: {"):
            seen.update(c["index"] for c in orjson.loads(line[6:]).get("choices", []))
    return sorted(seen)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("api", "fields"),
    [
        ("completions", {"n": 3, "best_of": 3, "logprobs": 2}),
        ("completions", {"n": 2, "echo": True}),
        ("chat", {"n": 2, "logprobs": True, "top_logprobs": 2}),
    ],
)
def test_n_and_output_fields_reach_the_decode_only(
    pair: Pair, api: str, fields: dict[str, Any], stream: bool
) -> None:
    pair.reset()
    client_body = _body(api, stream=stream, **fields)
    resp = pair.post(api, client_body)
    assert resp.status_code == 200, resp.text
    assert _choice_indexes(resp, stream) == list(range(fields["n"]))

    (prefill,) = pair.p.stats()["recent"]
    (decode,) = pair.d.stats()["recent"]
    assert prefill["body"]["kv_transfer_params"]["do_remote_decode"] is True
    assert not set(OUTPUT_FIELDS) & set(prefill["body"]), prefill["body"]
    decode["body"].pop("kv_transfer_params")
    assert decode["body"] == client_body  # the client's request, as it sent it
    # A prefill fanned out into n sequences would leave n - 1 of them holding KV.
    assert pair.p.stats()["kv_held"] == 0


@pytest.mark.parametrize(
    ("api", "fields"),
    [
        ("completions", {"prompt_logprobs": 1}),
        ("chat", {"prompt_logprobs": 0}),
        ("completions", {"echo": True, "logprobs": 1}),
        ("completions", {"use_beam_search": True}),
        ("completions", {"n": "2"}),  # only the engine knows how it reads a string here
    ],
)
def test_requests_pd_cannot_serve_run_on_one_engine(
    pair: Pair, api: str, fields: dict[str, Any]
) -> None:
    pair.reset()
    before = pair.router.metric("pdstack_router_pd_decisions_total", decision="direct")
    pair.post(api, _body(api, **fields))
    assert pair.p.stats()["by_path"] == {}, "the prefill engine was used"
    (decode,) = pair.d.stats()["recent"]
    assert "kv_transfer_params" not in decode["body"]
    after = pair.router.metric("pdstack_router_pd_decisions_total", decision="direct")
    assert after == before + 1


# vLLM's own rules (0.32 protocol validators and SamplingParams), which its decode engine
# applies only after the prefill ran, because the prefill leg does not carry these fields.
INVARIANTS = [
    ("completions", {"stream_options": {"include_usage": True}}, "stream_options"),
    ("chat", {"stream": False, "stream_options": {"include_usage": True}}, "stream_options"),
    ("completions", {"max_tokens": 2, "min_tokens": 5}, "min_tokens"),
    ("chat", {"max_completion_tokens": 2, "min_tokens": 3}, "min_tokens"),
    ("completions", {"min_tokens": -1}, "min_tokens"),
    ("completions", {"n": 0}, "n"),
    ("chat", {"n": 2, "temperature": 0}, "n"),  # greedy sampling makes one sequence
    ("completions", {"logprobs": -2}, "logprobs"),
    ("chat", {"top_logprobs": 3}, "top_logprobs"),
    ("chat", {"logprobs": True, "top_logprobs": -5}, "top_logprobs"),
    ("completions", {"stream": True, "prompt_logprobs": 1}, "prompt_logprobs"),
    ("completions", {"prompt_logprobs": -3}, "prompt_logprobs"),
    ("chat", {"logprob_token_ids": [1, 2]}, "logprob_token_ids"),
]


@pytest.mark.parametrize(("api", "fields", "param"), INVARIANTS)
def test_vllm_rules_are_checked_before_the_prefill(
    pair: Pair, api: str, fields: dict[str, Any], param: str
) -> None:
    pair.reset()
    resp = pair.post(api, _body(api, **fields))
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error"
    assert err["code"] == f"invalid_{param}"
    assert pair.p.stats()["by_path"] == {} and pair.d.stats()["by_path"] == {}


def test_a_prefill_rejection_keeps_the_engines_error_body(pair: Pair) -> None:
    pair.reset()
    too_long = _body("completions")
    too_long["prompt"] = "word " * 5000  # past the engine's context length
    resp = pair.post("completions", too_long)
    direct = httpx.post(pair.p.url + "/v1/completions", json=too_long, timeout=30)
    assert resp.status_code == direct.status_code == 400
    assert resp.json() == direct.json()  # type, code and param as the engine sent them
    assert resp.json()["error"]["param"] == "prompt"
    assert resp.headers["x-pdstack-pd-phase"] == "prefill"
    assert resp.headers["x-pdstack-pd-reason"] == "engine_rejected"
    assert resp.headers["x-should-retry"] == "false"
    assert pair.d.stats()["by_path"] == {}


def test_engines_get_the_routers_request_id_never_the_clients(pair: Pair) -> None:
    pair.reset()
    body = _body("completions")

    def send(_: int) -> httpx.Response:
        return pair.post("completions", body, headers={"x-request-id": "same-id"})

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(send, range(2)))
    assert [a.headers["x-request-id"] for a in answers] == ["same-id", "same-id"]
    prefill_ids = [r["headers"]["x-request-id"] for r in pair.p.stats()["recent"]]
    decode_ids = [r["headers"]["x-request-id"] for r in pair.d.stats()["recent"]]
    assert "same-id" not in prefill_ids + decode_ids
    assert len(set(prefill_ids)) == 2  # one id per client request ...
    assert set(prefill_ids) == set(decode_ids)  # ... shared by its two legs

    # Without a client id, the client learns the router's id, the one in the engines' logs.
    resp = pair.post("completions", body)
    assert resp.headers["x-request-id"] == pair.d.stats()["recent"][-1]["headers"]["x-request-id"]
    # The log line of each request names both ids, so either finds it.
    assert pair.router.log_text().count("client_id=same-id") == 2
    assert all(f"request {rid} client_id=same-id" in pair.router.log_text() for rid in decode_ids)
