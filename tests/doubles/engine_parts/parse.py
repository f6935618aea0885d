"""Request validation like vLLM's OpenAI server, and classification into PD request kinds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .knobs import Knobs
from .textgen import apply_chat_template, tokenize_text

PLAIN, PREFILL, DECODE, LMCACHE_PREFILL = "plain", "prefill", "decode", "lmcache_prefill"
MAX_N = 16  # parallel sequences per request (vLLM's VLLM_MAX_N_SEQUENCES is larger)


class RequestError(Exception):
    """A client error with the HTTP status vLLM would answer."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


@dataclass
class Parsed:
    """A validated inference request."""

    chat: bool
    kind: str
    model: str
    tokens: list[int]
    max_tokens: int
    stream: bool
    include_usage: bool
    ignore_eos: bool
    min_tokens: int
    kv_params: dict[str, Any] | None
    n: int = 1


def classify(body: dict[str, Any]) -> str:
    params = body.get("kv_transfer_params")
    if not isinstance(params, dict):
        return PLAIN
    if params.get("do_remote_decode") is True:
        return PREFILL
    if params.get("do_remote_prefill") is True:
        return DECODE
    if "disagg_spec" in params or params.get("ret_first_tok") is True:
        return LMCACHE_PREFILL
    return PLAIN


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def prompt_tokens(prompt: Any) -> list[int]:
    """Completions prompt: a string, a list of token ids, or a one-element list of either."""
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return tokenize_text(prompt)
    if isinstance(prompt, list) and all(_is_int(t) and t >= 0 for t in prompt):
        return list(prompt)
    raise RequestError(400, "prompt must be a string or a list of token ids", "prompt")


def chat_tokens(body: dict[str, Any]) -> list[int]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "messages must be a non-empty list", "messages")
    if not all(isinstance(m, dict) and "role" in m for m in messages):
        raise RequestError(400, "each message needs a role", "messages")
    add_gen = body.get("add_generation_prompt", True)
    return tokenize_text(apply_chat_template(messages, bool(add_gen)))


def parse_request(body: Any, chat: bool, knobs: Knobs) -> Parsed:
    """Validate like vLLM; raise RequestError with vLLM's status and a clear message."""
    if not isinstance(body, dict):
        raise RequestError(400, "request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or model not in knobs.models:
        raise RequestError(404, f"The model `{model}` does not exist.", "model")
    kind = classify(body)
    tokens = chat_tokens(body) if chat else prompt_tokens(body.get("prompt"))
    if not tokens:
        raise RequestError(400, "prompt is empty", "prompt")
    n = body.get("n", 1)
    n = 1 if n is None else n
    if not _is_int(n) or not 1 <= n <= MAX_N:
        raise RequestError(400, f"n must be an integer in [1, {MAX_N}], got {n}.", "n")
    max_tokens: Any = body.get("max_tokens")
    if chat and body.get("max_completion_tokens") is not None:
        max_tokens = body["max_completion_tokens"]
    if max_tokens is not None and (not _is_int(max_tokens) or max_tokens < 1):
        raise RequestError(400, f"max_tokens must be at least 1, got {max_tokens}.", "max_tokens")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError(400, "stream must be a boolean", "stream")
    stream_options = body.get("stream_options")
    if stream_options is not None and not stream:
        raise RequestError(
            400, "Stream options can only be defined when `stream=True`.", "stream_options"
        )
    min_tokens = body.get("min_tokens", 0) or 0
    if not _is_int(min_tokens) or min_tokens < 0:
        raise RequestError(400, "min_tokens must be greater than or equal to 0", "min_tokens")
    limit = knobs.max_model_len
    if len(tokens) >= limit:
        raise RequestError(
            400,
            f"This model's maximum context length is {limit} tokens. However, your request "
            f"has {len(tokens)} input tokens. Please reduce the length of the input messages.",
            "messages" if chat else "prompt",
        )
    if max_tokens is None:
        max_tokens = min(knobs.output_tokens, limit - len(tokens))
    elif len(tokens) + max_tokens > limit:
        raise RequestError(
            400,
            f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{len(tokens) + max_tokens} tokens ({len(tokens)} in the messages, {max_tokens} in "
            "the completion). Please reduce the length of the messages or completion.",
            "max_tokens",
        )
    if min_tokens > max_tokens:
        raise RequestError(
            400,
            f"min_tokens must be less than or equal to max_tokens={max_tokens}, got {min_tokens}.",
            "min_tokens",
        )
    if kind == PREFILL and stream:
        raise RequestError(400, "Prefill does not support streaming", "stream")
    params = body.get("kv_transfer_params")
    return Parsed(
        chat=chat,
        kind=kind,
        model=model,
        tokens=tokens,
        max_tokens=max_tokens,
        stream=stream,
        include_usage=bool(
            isinstance(stream_options, dict) and stream_options.get("include_usage")
        ),
        ignore_eos=bool(body.get("ignore_eos", False)),
        min_tokens=min_tokens,
        kv_params=params if isinstance(params, dict) else None,
        n=n,
    )
