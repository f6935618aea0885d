"""Property tests of the router's request validation (pdrouter.api.validation), no sockets.

Whatever a client sends, validation either accepts a payload the router can route (model a
non-empty string, stream a bool, token limits positive ints, a usable prompt or messages) or
raises a RouterError with a 4xx status and a code; never any other exception.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pdrouter.api.validation import parse_body, prompt_text, validate_payload
from pdrouter.proxy.errors import RouterError

from tests.fuzz.counts import CaseCounts
from tests.fuzz.strategies import raw_bodies, request_payloads, sampling_payloads

EXAMPLES = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _int(value: Any) -> bool:
    return type(value) is int


def _accepted_shape(api: str, payload: dict[str, Any], model: str, stream: bool) -> None:
    assert isinstance(model, str) and model.strip() and len(model) <= 256
    assert stream is bool(payload.get("stream") or False)
    for name in ("max_tokens", "max_completion_tokens"):
        value = payload.get(name)
        assert value is None or (type(value) is int and value >= 1)
    assert "kv_transfer_params" not in payload  # only the router may set it
    if api == "chat":
        assert payload["messages"] and all(isinstance(m, dict) for m in payload["messages"])
    # Routing features are computed from any accepted payload without failing.
    assert isinstance(prompt_text(api, payload), str)
    # vLLM's cross-field rules hold for whatever the router lets through to a PD prefill.
    assert not payload.get("stream_options") or stream
    limit = payload.get("max_tokens")
    if api == "chat" and payload.get("max_completion_tokens") is not None:
        limit = payload["max_completion_tokens"]
    if _int(payload.get("min_tokens")):
        assert payload["min_tokens"] >= 0
        assert limit is None or payload["min_tokens"] <= limit
    assert not _int(payload.get("n")) or payload["n"] >= 1
    temperature = payload.get("temperature")
    if _int(payload.get("n")) and payload["n"] > 1 and isinstance(temperature, (int, float)):
        assert isinstance(temperature, bool) or temperature >= 1e-5
    wants = bool(payload.get("logprobs")) if api == "chat" else payload.get("logprobs") is not None
    assert not payload.get("logprob_token_ids") or wants
    top = payload.get("top_logprobs")
    if api == "chat" and _int(top):
        assert top == 0 or ((top > 0 or top == -1) and wants)


@pytest.mark.parametrize("api", ["completions", "chat"])
@EXAMPLES
@given(body=raw_bodies())
def test_any_body_is_accepted_or_a_4xx(api: str, body: bytes, case_counts: CaseCounts) -> None:
    try:
        payload = parse_body(body)
        model, stream = validate_payload(api, payload)
    except RouterError as err:
        assert 400 <= err.status < 500 and err.code, err
        case_counts.add("validation_raw", err.code)
        return
    _accepted_shape(api, payload, model, stream)
    case_counts.add("validation_raw", "accepted")


@pytest.mark.parametrize("api", ["completions", "chat"])
@EXAMPLES
@given(payload=request_payloads())
def test_any_object_is_accepted_or_a_4xx(
    api: str, payload: dict[str, Any], case_counts: CaseCounts
) -> None:
    try:
        model, stream = validate_payload(api, payload)
    except RouterError as err:
        assert 400 <= err.status < 500 and err.code, err
        case_counts.add("validation_object", err.code)
        return
    _accepted_shape(api, payload, model, stream)
    case_counts.add("validation_object", "accepted")


@pytest.mark.parametrize("api", ["completions", "chat"])
@EXAMPLES
@given(payload=sampling_payloads())
def test_sampling_fields_vllm_would_refuse_never_pass(
    api: str, payload: dict[str, Any], case_counts: CaseCounts
) -> None:
    """What the router lets through satisfies vLLM's cross-field rules, so a PD decode never
    refuses a request after its prefill ran; what it refuses names the field."""
    try:
        model, stream = validate_payload(api, payload)
    except RouterError as err:
        assert err.status == 400 and err.param in payload, err
        case_counts.add("validation_sampling", err.code)
        return
    _accepted_shape(api, payload, model, stream)
    case_counts.add("validation_sampling", "accepted")


@given(limit=st.one_of(st.integers(max_value=0), st.booleans(), st.floats(), st.text()))
@settings(max_examples=300, deadline=None)
def test_max_tokens_must_be_a_positive_integer(limit: Any) -> None:
    payload = {"model": "tiny", "prompt": "x", "max_tokens": limit}
    with pytest.raises(RouterError) as info:
        validate_payload("completions", payload)
    assert info.value.status == 400
    assert info.value.code == "invalid_max_tokens"
    assert info.value.param == "max_tokens"


@given(min_tokens=st.integers(min_value=1, max_value=10**6), limit=st.integers(1, 10**6))
@settings(max_examples=200, deadline=None)
def test_min_tokens_above_the_limit_is_refused_with_its_param(min_tokens: int, limit: int) -> None:
    payload = {"model": "tiny", "prompt": "x", "max_tokens": limit, "min_tokens": min_tokens}
    if min_tokens <= limit:
        validate_payload("completions", payload)
        return
    with pytest.raises(RouterError) as info:
        validate_payload("completions", payload)
    assert (info.value.status, info.value.param) == (400, "min_tokens")
