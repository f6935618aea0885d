"""Conditional disaggregation: with --pd-min-prompt-tokens a short prompt skips the prefill
engine and is served by the decode engine alone; a long one still goes through prefill."""

from __future__ import annotations

import procs
import pytest

from tests.e2e.harness import EnginePair, RouterFactory
from tests.e2e.helpers import IGNORE_EOS, MODEL, client, metric, unique_prompt, wait_for_value

pytestmark = pytest.mark.e2e

PROMPT_TOKENS = "vllm:prompt_tokens_total"
MIN_PROMPT_TOKENS = 100


@pytest.fixture(scope="module")
def router(engine_pair: EnginePair, router_factory: RouterFactory) -> procs.ManagedProcess:
    """A disagg_prefill router that disaggregates only prompts of 100 tokens or more."""
    return router_factory.start(
        [engine_pair.prefill.url, engine_pair.decode.url],
        ["prefill", "decode"],
        "disagg_prefill",
        extra_args=("--pd-min-prompt-tokens", str(MIN_PROMPT_TOKENS)),
    )


def test_short_prompt_skips_prefill(router: procs.ManagedProcess, healthy_pair: EnginePair) -> None:
    prefill, decode = healthy_pair.prefill.url, healthy_pair.decode.url
    prefill_before = metric(prefill, PROMPT_TOKENS)
    decode_before = metric(decode, PROMPT_TOKENS)

    resp = client(router.url).completions.create(
        model=MODEL, prompt="def short():", max_tokens=8, temperature=0.0, extra_body=IGNORE_EOS
    )

    assert resp.usage is not None and resp.usage.prompt_tokens < MIN_PROMPT_TOKENS
    grown = wait_for_value(
        lambda: metric(decode, PROMPT_TOKENS) - decode_before, resp.usage.prompt_tokens
    )
    assert grown == resp.usage.prompt_tokens, "the decode engine should compute the prompt"
    assert metric(prefill, PROMPT_TOKENS) == prefill_before, "the prefill engine was used"


def test_long_prompt_still_uses_prefill(
    router: procs.ManagedProcess, healthy_pair: EnginePair
) -> None:
    prefill = healthy_pair.prefill.url
    prefill_before = metric(prefill, PROMPT_TOKENS)
    resp = client(router.url).completions.create(
        model=MODEL,
        prompt=unique_prompt(repeats=6),
        max_tokens=8,
        temperature=0.0,
        extra_body=IGNORE_EOS,
    )
    assert resp.usage is not None and resp.usage.prompt_tokens >= MIN_PROMPT_TOKENS
    grown = wait_for_value(
        lambda: metric(prefill, PROMPT_TOKENS) - prefill_before, resp.usage.prompt_tokens
    )
    assert grown == resp.usage.prompt_tokens
