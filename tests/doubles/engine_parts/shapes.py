"""vLLM-shaped OpenAI bodies and SSE chunks, built as bytes for a lean streaming path."""

from __future__ import annotations

from typing import Any

import orjson

from .textgen import TOKEN_JSON

DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
JSON_TYPE = "application/json"

_ERROR_TYPES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    413: "BadRequestError",
    429: "RateLimitError",
    500: "InternalServerError",
    501: "NotImplementedError",
    503: "ServiceUnavailableError",
}


def error_body(status: int, message: str, param: str | None = None) -> bytes:
    """vLLM's current error shape: ``{"error": {message, type, param, code}}``."""
    etype = _ERROR_TYPES.get(status, "InternalServerError" if status >= 500 else "BadRequestError")
    return orjson.dumps(
        {"error": {"message": message, "type": etype, "param": param, "code": status}}
    )


def usage(prompt: int, completion: int, cached: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "total_tokens": prompt + completion,
        "completion_tokens": completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def completion_body(
    rid: str,
    created: int,
    model: str,
    text: str,
    finish: str,
    use: dict[str, Any],
    kv_params: dict[str, Any] | None,
    n: int = 1,
) -> bytes:
    return orjson.dumps(
        {
            "id": rid,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": i,
                    "text": text,
                    "logprobs": None,
                    "finish_reason": finish,
                    "stop_reason": None,
                    "prompt_logprobs": None,
                }
                for i in range(n)
            ],
            "service_tier": None,
            "system_fingerprint": None,
            "usage": use,
            "kv_transfer_params": kv_params,
        }
    )


def chat_body(
    rid: str,
    created: int,
    model: str,
    text: str,
    finish: str,
    use: dict[str, Any],
    kv_params: dict[str, Any] | None,
    n: int = 1,
) -> bytes:
    return orjson.dumps(
        {
            "id": rid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": i,
                    "message": {
                        "role": "assistant",
                        "content": text,
                        "refusal": None,
                        "annotations": None,
                        "audio": None,
                        "function_call": None,
                        "tool_calls": [],
                        "reasoning_content": None,
                    },
                    "logprobs": None,
                    "finish_reason": finish,
                    "stop_reason": None,
                }
                for i in range(n)
            ],
            "service_tier": None,
            "system_fingerprint": None,
            "usage": use,
            "prompt_logprobs": None,
            "kv_transfer_params": kv_params,
        }
    )


# Chat delta kinds (knob chat_delta): what wraps a token's text in a chat stream event.
_DELTAS = {
    "content": (b'"delta":{"content":', b"}"),
    "reasoning": (b'"delta":{"reasoning":', b"}"),
    "reasoning_content": (b'"delta":{"reasoning_content":', b"}"),
    "tool_calls": (b'"delta":{"tool_calls":[{"index":0,"function":{"arguments":', b"}}]}"),
}


class StreamChunks:
    """Builds one request's SSE chunks from a per-request prefix and pre-encoded tokens."""

    def __init__(
        self, chat: bool, rid: str, created: int, model: str, delta: str = "content"
    ) -> None:
        self.chat = chat
        obj = "chat.completion.chunk" if chat else "text_completion"
        head = orjson.dumps({"id": rid, "object": obj, "created": created, "model": model})
        # head ends with "}"; reopen it to append the choices array.
        self._head = b"data: " + head[:-1]
        if chat:
            opening, closing = _DELTAS[delta]
            self._text = b',"choices":[{"index":%d,' + opening
            self._mid = closing + b',"logprobs":null,"finish_reason":'
        else:
            self._text = b',"choices":[{"index":%d,"text":'
            self._mid = b',"logprobs":null,"finish_reason":'
        self._pre = self._head + self._text % 0

    def role(self, index: int = 0) -> bytes:
        return (
            self._head
            + b',"choices":[{"index":%d,"delta":{"role":"assistant","content":""},' % index
            + b'"logprobs":null,"finish_reason":null}]}\n\n'
        )

    def token(self, token_id: int, finish: str | None, index: int = 0) -> bytes:
        fin = b"null" if finish is None else b'"' + finish.encode() + b'"'
        pre = self._pre if index == 0 else self._head + self._text % index
        return pre + TOKEN_JSON[token_id] + self._mid + fin + b',"stop_reason":null}]}\n\n'

    def usage(self, use: dict[str, Any]) -> bytes:
        return self._head + b',"choices":[],"usage":' + orjson.dumps(use) + b"}\n\n"
