"""Prefill/decode disaggregation over NIXL with real vLLM engines (1 prefill + 1 decode).

What a user would check: the decode engine loaded the prompt's KV from the prefill engine
instead of recomputing it (its external prefix-cache hits grow by the prompt's token count),
the answer is the one a single engine gives, streaming still streams, and the router's own
metrics count the request as disaggregated.
"""

from __future__ import annotations

import time

import httpx
import procs
import pytest

from tests.e2e.harness import EnginePair, RouterFactory
from tests.e2e.helpers import (
    IGNORE_EOS,
    MODEL,
    client,
    engine_chat,
    engine_completion,
    metric,
    unique_prompt,
    wait_for_value,
)

pytestmark = pytest.mark.e2e

EXTERNAL_HITS = "vllm:external_prefix_cache_hits_total"
# vLLM merges tokens that pile up while its API server is busy into one chunk; a few hundred
# milliseconds of generation is enough for a stream to show several chunks even on a loaded box.
STREAM_TOKENS = 128
DISAGGREGATED = ("pdstack_router_pd_decisions_total", {"decision": "disaggregated"})


@pytest.fixture(scope="module")
def router(engine_pair: EnginePair, router_factory: RouterFactory) -> procs.ManagedProcess:
    """A disagg_prefill router: prefill engine on core 0, decode engine on core 1."""
    return router_factory.start(
        [engine_pair.prefill.url, engine_pair.decode.url],
        ["prefill", "decode"],
        "disagg_prefill",
        extra_args=("--kv-transport", "nixl"),
    )


@pytest.mark.parametrize("repeats", [1, 4, 8])
def test_decode_loads_whole_prompt_kv_and_matches_single_engine(
    router: procs.ManagedProcess, healthy_pair: EnginePair, repeats: int
) -> None:
    decode = healthy_pair.decode.url
    prompt = unique_prompt(repeats)
    hits_before = metric(decode, EXTERNAL_HITS)
    decisions_before = metric(router.url, DISAGGREGATED[0], **DISAGGREGATED[1])

    resp = client(router.url).completions.create(
        model=MODEL, prompt=prompt, max_tokens=16, temperature=0.0, extra_body=IGNORE_EOS
    )

    assert resp.usage is not None
    prompt_tokens = resp.usage.prompt_tokens
    hits = wait_for_value(lambda: metric(decode, EXTERNAL_HITS) - hits_before, prompt_tokens)
    assert hits == prompt_tokens, "decode engine recomputed instead of loading the KV"
    expected, _ = engine_completion(healthy_pair.prefill.url, prompt, 16)
    assert resp.choices[0].text == expected
    assert resp.usage.completion_tokens == 16
    assert metric(router.url, DISAGGREGATED[0], **DISAGGREGATED[1]) == decisions_before + 1


def test_chat_stream_arrives_while_decode_runs(
    router: procs.ManagedProcess, healthy_pair: EnginePair
) -> None:
    decode = healthy_pair.decode.url
    content = unique_prompt(repeats=3)
    max_tokens = 400  # a few seconds of decoding on one core: long enough to watch it stream
    hits_before = metric(decode, EXTERNAL_HITS)

    stream = client(router.url).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": content}],
        max_tokens=max_tokens,
        stream=True,
        stream_options={"include_usage": True},
        temperature=0.0,
        extra_body=IGNORE_EOS,
    )
    deltas: list[str] = []
    arrivals: list[float] = []
    running_at_first_token = -1.0
    usage = None
    for chunk in stream:
        usage = chunk.usage or usage
        text = chunk.choices[0].delta.content if chunk.choices else None
        if not text:
            continue
        if not deltas:
            # Streaming means the first tokens reach us while the decoder is still generating.
            running_at_first_token = metric(decode, "vllm:num_requests_running")
        deltas.append(text)
        arrivals.append(time.monotonic())

    assert running_at_first_token >= 1, "the first chunk arrived only after decoding finished"
    assert len(deltas) > 10
    assert len(set(arrivals)) > 1, "all chunks arrived at once"
    assert usage is not None
    assert usage.completion_tokens == max_tokens
    hits = wait_for_value(lambda: metric(decode, EXTERNAL_HITS) - hits_before, usage.prompt_tokens)
    assert hits == usage.prompt_tokens
    assert "".join(deltas) == engine_chat(healthy_pair.prefill.url, content, max_tokens)


def test_completion_stream_matches_non_stream(
    router: procs.ManagedProcess, healthy_pair: EnginePair
) -> None:
    prompt = unique_prompt(repeats=2)
    stream = client(router.url).completions.create(
        model=MODEL,
        prompt=prompt,
        max_tokens=STREAM_TOKENS,
        stream=True,
        temperature=0.0,
        extra_body=IGNORE_EOS,
    )
    texts = [c.choices[0].text for c in stream if c.choices]
    assert len([t for t in texts if t]) > 1
    expected, _ = engine_completion(healthy_pair.prefill.url, prompt, STREAM_TOKENS)
    assert "".join(texts) == expected


def test_n_sequences_through_pd_match_a_single_engine(
    router: procs.ManagedProcess, healthy_pair: EnginePair
) -> None:
    """`n` > 1 reaches the decode only: the prefill runs one sequence (it would otherwise fan
    out and hold KV for sequences nobody reads), and the n sequences the decode samples from
    the transferred KV are the ones a single engine samples with the same seed."""
    prompt = unique_prompt(repeats=3)
    sampling = {"max_tokens": 8, "n": 3, "temperature": 1.0, "seed": 1234}
    decisions_before = metric(router.url, DISAGGREGATED[0], **DISAGGREGATED[1])
    via_router = client(router.url).completions.create(
        model=MODEL, prompt=prompt, extra_body=IGNORE_EOS, **sampling
    )
    direct = client(healthy_pair.prefill.url).completions.create(
        model=MODEL, prompt=prompt, extra_body=IGNORE_EOS, **sampling
    )
    texts = [c.text for c in sorted(via_router.choices, key=lambda c: c.index)]
    assert sorted(c.index for c in via_router.choices) == [0, 1, 2]
    assert texts == [c.text for c in sorted(direct.choices, key=lambda c: c.index)]
    assert via_router.usage is not None and via_router.usage.completion_tokens == 3 * 8
    assert metric(router.url, DISAGGREGATED[0], **DISAGGREGATED[1]) == decisions_before + 1


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"max_tokens": 2, "min_tokens": 5}, "min_tokens"),
        ({"stream": True, "prompt_logprobs": 1}, "prompt_logprobs"),
        ({"logprobs": -2}, "logprobs"),
        ({"n": 0}, "n"),
        ({"n": 2, "temperature": 0}, "n"),
    ],
)
def test_vllm_rules_the_router_checks_first_match_vllm(
    router: procs.ManagedProcess, healthy_pair: EnginePair, fields: dict[str, object], param: str
) -> None:
    """The rules the router applies before a prefill answer like the engine itself: same status
    and, where vLLM names one, the same param (the router always names it)."""
    body = {"model": MODEL, "prompt": "hello", "max_tokens": 4, **fields}
    via_router = httpx.post(router.url + "/v1/completions", json=body, timeout=30)
    direct = httpx.post(healthy_pair.decode.url + "/v1/completions", json=body, timeout=30)
    assert via_router.status_code == direct.status_code == 400, direct.text
    assert via_router.json()["error"]["param"] == param
    assert direct.json()["error"]["param"] in (param, None)
