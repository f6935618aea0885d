"""Aggregated serving through the router with the official OpenAI client, real vLLM behind it.

The router round-robins over the session's two engines as plain (role `both`) backends: a
request without kv_transfer_params is served end to end by whichever engine gets it.
"""

from __future__ import annotations

import procs
import pytest

from tests.e2e.harness import EnginePair, RouterFactory
from tests.e2e.helpers import (
    IGNORE_EOS,
    MODEL,
    client,
    engine_chat,
    engine_completion,
    unique_prompt,
)

pytestmark = pytest.mark.e2e

MAX_TOKENS = 12
# vLLM merges tokens that pile up while its API server is busy into one chunk; a few hundred
# milliseconds of generation is enough for a stream to show several chunks even on a loaded box.
STREAM_TOKENS = 128


@pytest.fixture(scope="module")
def router(engine_pair: EnginePair, router_factory: RouterFactory) -> procs.ManagedProcess:
    """A round-robin router over both engines."""
    return router_factory.start(
        [engine_pair.prefill.url, engine_pair.decode.url], ["both", "both"], "roundrobin"
    )


def test_models_lists_the_served_model(router: procs.ManagedProcess) -> None:
    models = client(router.url).models.list()
    assert MODEL in [m.id for m in models.data]


def test_completion_non_stream_equals_engine(
    router: procs.ManagedProcess, engine_pair: EnginePair
) -> None:
    prompt = unique_prompt()
    resp = client(router.url).completions.create(
        model=MODEL, prompt=prompt, max_tokens=MAX_TOKENS, temperature=0.0, extra_body=IGNORE_EOS
    )
    expected, prompt_tokens = engine_completion(engine_pair.prefill.url, prompt, MAX_TOKENS)
    assert resp.choices[0].text == expected
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == prompt_tokens
    assert resp.usage.completion_tokens == MAX_TOKENS


def test_completion_stream_equals_engine(
    router: procs.ManagedProcess, engine_pair: EnginePair
) -> None:
    prompt = unique_prompt()
    stream = client(router.url).completions.create(
        model=MODEL,
        prompt=prompt,
        max_tokens=STREAM_TOKENS,
        stream=True,
        stream_options={"include_usage": True},
        temperature=0.0,
        extra_body=IGNORE_EOS,
    )
    texts: list[str] = []
    usage = None
    for chunk in stream:
        texts.extend(c.text for c in chunk.choices)
        usage = chunk.usage or usage
    expected, _ = engine_completion(engine_pair.decode.url, prompt, STREAM_TOKENS)
    assert len([t for t in texts if t]) > 1, "expected several streamed chunks"
    assert "".join(texts) == expected
    assert usage is not None and usage.completion_tokens == STREAM_TOKENS


def test_chat_non_stream_equals_engine(
    router: procs.ManagedProcess, engine_pair: EnginePair
) -> None:
    content = unique_prompt(repeats=2)
    resp = client(router.url).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": content}],
        max_tokens=MAX_TOKENS,
        temperature=0.0,
        extra_body=IGNORE_EOS,
    )
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == engine_chat(
        engine_pair.prefill.url, content, MAX_TOKENS
    )
    assert resp.usage is not None and resp.usage.completion_tokens == MAX_TOKENS


def test_chat_stream_equals_engine(router: procs.ManagedProcess, engine_pair: EnginePair) -> None:
    content = unique_prompt(repeats=2)
    stream = client(router.url).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": content}],
        max_tokens=STREAM_TOKENS,
        stream=True,
        temperature=0.0,
        extra_body=IGNORE_EOS,
    )
    deltas = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len([d for d in deltas if d]) > 1, "expected several streamed chunks"
    assert "".join(deltas) == engine_chat(engine_pair.decode.url, content, STREAM_TOKENS)
