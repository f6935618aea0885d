"""Hypothesis strategies for OpenAI request bodies, valid and broken in every way a client can."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

# Any JSON value (bounded so a single example stays small).
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)

token_limits = st.one_of(
    st.integers(min_value=-5, max_value=12),
    st.integers(min_value=2**31, max_value=2**64),
    st.floats(allow_nan=False),
    st.text(max_size=4),
    st.booleans(),
    st.none(),
)

prompts = st.one_of(
    st.text(max_size=40),
    st.lists(st.text(max_size=10), max_size=3),
    st.lists(st.integers(min_value=-3, max_value=50_000), max_size=5),
    st.lists(st.lists(st.integers(min_value=0, max_value=100), max_size=3), max_size=2),
    json_values,
)

messages = st.one_of(
    st.lists(
        st.fixed_dictionaries(
            {"role": st.sampled_from(["user", "system", "assistant", ""]) | json_values},
            optional={
                "content": st.text(max_size=30)
                | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": json_values}))
                | json_values
            },
        ),
        max_size=3,
    ),
    json_values,
)

# Fields vLLM checks against each other (the router checks them before any engine runs).
small_ints = st.integers(min_value=-3, max_value=6)
_SAMPLING = {
    "n": small_ints | json_values,
    "min_tokens": small_ints | json_values,
    "logprobs": st.booleans() | small_ints | json_values,
    "top_logprobs": small_ints | json_values,
    "prompt_logprobs": small_ints | json_values,
    "logprob_token_ids": st.lists(st.integers(0, 9), max_size=2) | json_values,
    "echo": st.booleans(),
    "temperature": st.sampled_from([0, 0.0, 1e-6, 0.7, 1]) | json_values,
}

_FIELDS = {
    **_SAMPLING,
    "model": st.sampled_from(["tiny", "", " ", "nope", "m" * 300]) | json_values,
    "stream": st.booleans() | json_values,
    "max_tokens": token_limits,
    "max_completion_tokens": token_limits,
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}) | json_values,
    "kv_transfer_params": json_values,
    "prompt": prompts,
    "messages": messages,
}


_USUAL = {
    "model": st.just("tiny"),
    "prompt": st.text(min_size=1, max_size=30),
    "messages": st.lists(
        st.fixed_dictionaries({"role": st.just("user"), "content": st.text(max_size=30)}),
        min_size=1,
        max_size=2,
    ),
}


@st.composite
def request_payloads(draw: st.DrawFn) -> dict[str, Any]:
    """A JSON object with some of the OpenAI fields and unknown fields. The fields routing needs
    are usually well-formed, so that the other fields' checks are reached too."""
    payload: dict[str, Any] = {}
    for name, usual in _USUAL.items():
        kind = draw(st.sampled_from(["usual", "usual", "usual", "any", "absent"]))
        if kind != "absent":
            payload[name] = draw(usual if kind == "usual" else _FIELDS[name])
    others = sorted(set(_FIELDS) - set(_USUAL))
    chosen = draw(st.sets(st.sampled_from(others), max_size=4))
    payload.update({name: draw(_FIELDS[name]) for name in sorted(chosen)})
    payload.update(draw(st.dictionaries(st.text(max_size=10), json_values, max_size=2)))
    return payload


@st.composite
def raw_bodies(draw: st.DrawFn) -> bytes:
    """Bodies that are often not JSON objects at all: bytes, truncated or non-object JSON."""
    kind = draw(st.sampled_from(["bytes", "truncated", "non_object", "object", "empty"]))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "empty":
        return draw(st.sampled_from([b"", b" ", b"\n", b"{}", b"null"]))
    if kind == "non_object":
        return json.dumps(draw(json_values)).encode()
    body = json.dumps(draw(request_payloads())).encode()
    if kind == "truncated":
        return body[: draw(st.integers(min_value=0, max_value=max(len(body) - 1, 0)))]
    return body


@st.composite
def sampling_payloads(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed request (model, prompt and messages) with sampling fields that vLLM checks
    against each other, often in combinations it refuses."""
    payload: dict[str, Any] = {name: draw(usual) for name, usual in _USUAL.items()}
    fields = {
        **_SAMPLING,
        "stream": st.booleans(),
        "max_tokens": st.integers(1, 6) | st.none(),
        "max_completion_tokens": st.integers(1, 6) | st.none(),
        "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}) | st.none(),
    }
    chosen = draw(st.sets(st.sampled_from(sorted(fields)), min_size=1, max_size=5))
    payload.update({name: draw(fields[name]) for name in sorted(chosen)})
    return payload
