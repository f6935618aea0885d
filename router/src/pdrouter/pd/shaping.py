"""What the prefill leg of a disaggregated request carries, and which requests cannot be split.

NIXL and fixed-peer PD (LMCache builds its legs in lmcache_shape.py; `direct_only` applies to
every transport, after its capability check): the prefill computes the prompt's KV and one token
whose text is thrown away. Fields that only shape the output must not reach it: vLLM fans `n`
out into n prefills of which only one hands its `kv_transfer_params` back (the others hold KV
blocks until their lease ends), and log-probabilities over the whole vocabulary
(`logprobs: -1`) or over the prompt cost real work. The decode leg gets the client's request
unchanged, so the client still gets what it asked for.
"""

from __future__ import annotations

from typing import Any

from pdrouter.pd.transports.base import Unsupported
from pdrouter.proxy.context import ClientRequest

# Output-side fields the prefill does without (the decode leg keeps them), and the fields that
# conflict with a one-token, non-streaming request (vLLM answers 400 otherwise).
_PREFILL_DROPS = (
    "n",
    "best_of",
    "echo",
    "logprobs",
    "top_logprobs",
    "logprob_token_ids",
    "prompt_logprobs",
    "stream_options",
    "min_tokens",
    "min_completion_tokens",
)


# The JSON types of the dropped fields: a value of another type (vLLM coerces many, e.g. "2"
# for n) would be judged by the decode engine only, after the prefill ran.
_PLAIN_TYPES: dict[str, tuple[type, ...]] = {
    "n": (int,),
    "best_of": (int,),
    "echo": (bool,),
    "logprobs": (bool, int),
    "top_logprobs": (int,),
    "logprob_token_ids": (list,),
    "prompt_logprobs": (int,),
    "stream_options": (dict,),
    "min_tokens": (int,),
    "min_completion_tokens": (int,),
}


def prefill_fields(payload: dict[str, Any]) -> dict[str, Any]:
    """The client's request as a one-token, non-streaming, single-sequence prefill."""
    body = {k: v for k, v in payload.items() if k not in _PREFILL_DROPS}
    body["stream"] = False
    body["max_tokens"] = 1
    if "max_completion_tokens" in body:
        body["max_completion_tokens"] = 1
    return body


def direct_only(req: ClientRequest) -> Unsupported | None:
    """The field that makes any transport run `req` on one engine, or None.

    Prompt log-probabilities need the prompt's logits, which a decoder that received the KV
    never computes; beam search runs its beams as separate engine requests, each of which would
    try to load the same transferred KV; and a field the prefill does not carry, given in a type
    only the engine knows how to read, would be judged after the prefill ran.
    """
    payload = req.payload
    if payload.get("prompt_logprobs") is not None:
        return Unsupported("prompt_logprobs", "the decoder never computes the prompt's logits")
    if payload.get("use_beam_search"):
        return Unsupported("use_beam_search", "every beam would load the same transferred KV")
    if req.api == "completions" and payload.get("echo") and payload.get("logprobs") is not None:
        return Unsupported("echo", "echo with logprobs needs the prompt's logits")
    for name, types in _PLAIN_TYPES.items():
        value = payload.get(name)
        if value is None:
            continue
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            # let the one engine judge it
            return Unsupported(name, f"{name} of type {type(value).__name__}")
    return None
