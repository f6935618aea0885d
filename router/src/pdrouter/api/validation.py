"""Validate a client's OpenAI request just enough to route it and to never forward garbage."""

from __future__ import annotations

from typing import Any

import orjson

from pdrouter.proxy.errors import RouterError, bad_request

_TOKEN_LIMITS = ("max_tokens", "max_completion_tokens")


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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_payload(api: str, payload: dict[str, Any]) -> tuple[str, bool]:
    """Check the fields routing relies on; returns (model, stream)."""
    model = payload.get("model")
    if not isinstance(model, str) or not model.strip():
        raise bad_request("'model' is required and must be a non-empty string", "missing_model")
    stream = payload.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean", "invalid_stream")
    for name in _TOKEN_LIMITS:
        value = payload.get(name)
        if value is not None and (not _is_int(value) or value < 1):
            raise bad_request(f"'{name}' must be a positive integer", f"invalid_{name}")
    opts = payload.get("stream_options")
    if opts is not None and not isinstance(opts, dict):
        raise bad_request("'stream_options' must be an object", "invalid_stream_options")
    if "kv_transfer_params" in payload:
        # Only the router may steer KV transfer: a client value could point an engine elsewhere.
        raise bad_request(
            "'kv_transfer_params' is set by the router and may not come from clients",
            "invalid_kv_transfer_params",
        )
    if api == "chat":
        messages = payload.get("messages")
        if not isinstance(messages, list) or not messages:
            raise bad_request("'messages' must be a non-empty array", "invalid_messages")
        if not all(isinstance(m, dict) for m in messages):
            raise bad_request("each message must be an object", "invalid_messages")
    else:
        prompt = payload.get("prompt")
        if not _valid_prompt(prompt):
            raise bad_request(
                "'prompt' must be a string, an array of strings, or an array of token ids",
                "invalid_prompt",
            )
    return model, stream


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
