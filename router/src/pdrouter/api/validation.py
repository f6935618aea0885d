"""Validate a client's OpenAI request just enough to route it and to never forward garbage."""

from __future__ import annotations

from typing import Any, TypeGuard

import orjson

from pdrouter.proxy.errors import RouterError, bad_request

_TOKEN_LIMITS = ("max_tokens", "max_completion_tokens")
# Longest `model` accepted: it is logged and, for served models, a metric label. Served model
# names are far shorter (Hugging Face ids are under 100 characters).
MAX_MODEL_CHARS = 256
# vLLM samples greedily below this temperature (SamplingParams' _SAMPLING_EPS).
_GREEDY_BELOW = 1e-5


def parse_body(body: bytes) -> dict[str, Any]:
    if not body:
        raise bad_request("request body is empty; expected a JSON object", code="empty_body")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise bad_request("request body must be a JSON object", code="invalid_json")
    return payload


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_payload(api: str, payload: dict[str, Any]) -> tuple[str, bool]:
    """Check the fields routing relies on; returns (model, stream)."""
    model = check_model(payload)
    stream = payload.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean", "invalid_stream", "stream")
    for name in _TOKEN_LIMITS:
        value = payload.get(name)
        if value is not None and (not _is_int(value) or value < 1):
            raise bad_request(f"'{name}' must be a positive integer", f"invalid_{name}", name)
    opts = payload.get("stream_options")
    if opts is not None and not isinstance(opts, dict):
        raise bad_request(
            "'stream_options' must be an object", "invalid_stream_options", "stream_options"
        )
    if "kv_transfer_params" in payload:
        # Only the router may steer KV transfer: a client value could point an engine elsewhere.
        raise bad_request(
            "'kv_transfer_params' is set by the router and may not come from clients",
            "invalid_kv_transfer_params",
            "kv_transfer_params",
        )
    check_engine_invariants(api, payload, stream)
    if api == "chat":
        messages = payload.get("messages")
        if not isinstance(messages, list) or not messages:
            raise bad_request(
                "'messages' must be a non-empty array", "invalid_messages", "messages"
            )
        if not all(isinstance(m, dict) for m in messages):
            raise bad_request("each message must be an object", "invalid_messages", "messages")
    else:
        prompt = payload.get("prompt")
        if not _valid_prompt(prompt):
            raise bad_request(
                "'prompt' must be a string, an array of strings, or an array of token ids",
                "invalid_prompt",
                "prompt",
            )
    return model, stream


def check_model(payload: dict[str, Any]) -> str:
    model = payload.get("model")
    if not isinstance(model, str) or not model.strip():
        raise bad_request(
            "'model' is required and must be a non-empty string", "missing_model", "model"
        )
    if len(model) > MAX_MODEL_CHARS:
        raise bad_request(
            f"'model' is longer than {MAX_MODEL_CHARS} characters", "invalid_model", "model"
        )
    return model


def _number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_engine_invariants(api: str, payload: dict[str, Any], stream: bool) -> None:
    """Rules vLLM enforces (entrypoints/openai/*/protocol.py, SamplingParams) that its decode
    engine would only apply after a full prefill: the PD prefill leg carries none of these
    fields (pd/shaping.py). Same status (400) and `param` as vLLM; values of unusual types are
    left to the engine, which coerces more than it rejects."""
    if payload.get("stream_options") and not stream:
        raise bad_request(
            "Stream options can only be defined when `stream=True`.",
            "invalid_stream_options",
            "stream_options",
        )
    n = payload.get("n")
    if _is_int(n) and n < 1:
        raise bad_request(f"n must be at least 1, got {n}.", "invalid_n", "n")
    temperature = payload.get("temperature")
    if _is_int(n) and n > 1 and _number(temperature) and 0 <= temperature < _GREEDY_BELOW:
        raise bad_request(f"n must be 1 when using greedy sampling, got {n}.", "invalid_n", "n")
    min_tokens = payload.get("min_tokens")
    if _is_int(min_tokens):
        limit = payload.get("max_completion_tokens") if api == "chat" else None
        limit_name = "max_completion_tokens"
        if limit is None:
            limit, limit_name = payload.get("max_tokens"), "max_tokens"
        if min_tokens < 0:
            raise bad_request(
                f"min_tokens must be greater than or equal to 0, got {min_tokens}.",
                "invalid_min_tokens",
                "min_tokens",
            )
        if _is_int(limit) and min_tokens > limit:
            raise bad_request(
                f"min_tokens must be less than or equal to {limit_name}={limit}, got {min_tokens}.",
                "invalid_min_tokens",
                "min_tokens",
            )
    _check_logprobs(api, payload, stream)


def _check_logprobs(api: str, payload: dict[str, Any], stream: bool) -> None:
    logprobs = payload.get("logprobs")
    names = (
        ("prompt_logprobs", "top_logprobs") if api == "chat" else ("prompt_logprobs", "logprobs")
    )
    for name in names:
        value = payload.get(name)
        if _number(value) and value < 0 and value != -1:
            raise bad_request(f"`{name}` must be a positive value or -1.", f"invalid_{name}", name)
    prompt_logprobs = payload.get("prompt_logprobs")
    if stream and _number(prompt_logprobs) and (prompt_logprobs > 0 or prompt_logprobs == -1):
        raise bad_request(
            "`prompt_logprobs` are not available when `stream=True`.",
            "invalid_prompt_logprobs",
            "prompt_logprobs",
        )
    wants_logprobs = bool(logprobs) if api == "chat" else logprobs is not None
    top = payload.get("top_logprobs")
    if api == "chat" and _number(top) and (top > 0 or top == -1) and not wants_logprobs:
        raise bad_request(
            "when using `top_logprobs`, `logprobs` must be set to true.",
            "invalid_top_logprobs",
            "top_logprobs",
        )
    if payload.get("logprob_token_ids") and not wants_logprobs:
        raise bad_request(
            "when using `logprob_token_ids`, `logprobs` must be set"
            + (" to true." if api == "chat" else "."),
            "invalid_logprob_token_ids",
            "logprob_token_ids",
        )


def _valid_prompt(prompt: Any) -> bool:
    if isinstance(prompt, str):
        return True
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt) or all(_is_int(p) for p in prompt):
            return True
        return all(isinstance(p, list) and p and all(_is_int(t) for t in p) for p in prompt)
    return False


def prompt_text(api: str, payload: dict[str, Any]) -> str:
    """The prompt as text, for prefix affinity and size estimates (no tokenizer needed)."""
    if api == "chat":
        parts: list[str] = []
        for message in payload.get("messages", ()):
            content = message.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts.extend(str(p.get("text", "")) for p in content if isinstance(p, dict))
        return "\n".join(parts)
    prompt = payload.get("prompt")
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        if all(isinstance(p, str) for p in prompt):
            return "\n".join(prompt)
        # token ids: about one token per 4 characters keeps the estimate comparable
        return " ".join(str(t) for t in prompt)[: 4 * max(len(prompt), 1)]
    return ""


def payload_too_large(limit: int) -> RouterError:
    return RouterError(
        413,
        f"request body exceeds the limit of {limit} bytes",
        type="invalid_request_error",
        code="request_too_large",
    )
