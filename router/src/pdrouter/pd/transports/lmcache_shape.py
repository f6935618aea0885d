"""The request bodies of LMCache's native PD mode, and what that mode cannot honour.

The prompt is tokenized on the prefiller; the prefiller computes one token from the token ids and
pushes the KV; the decoder continues from the ids plus that token on the completions API. So a
field is honoured only if it means the same on a token-id completions call split after the first
token. Whatever is not goes to the decoder alone (`Unsupported(direct=True)`): it serves any
request by itself, while a prefiller (an LMCache PD sender) must never see a plain one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pdrouter.pd.transports.base import Unsupported
from pdrouter.proxy.context import ClientRequest

# Chat fields that only shape the prompt: they go to /tokenize, which renders the template.
TEMPLATE_FIELDS = (
    "chat_template",
    "chat_template_kwargs",
    "add_generation_prompt",
    "continue_final_message",
    "documents",
    "add_special_tokens",
)
# Fields that never reach a leg's completions body as the client sent them.
_NOT_FORWARDED = frozenset(
    {
        "messages",
        "prompt",
        "stream",
        "stream_options",
        "kv_transfer_params",
        "n",
        "max_tokens",
        "max_completion_tokens",
        "min_tokens",
        *TEMPLATE_FIELDS,
    }
)
_ONE_SEQUENCE = "LMCache PD makes one sequence, its first token sampled on the prefill engine"
_CHAT_OUTPUT = "the decode leg runs on the completions API, which parses no tool calls"
_GRAMMAR = "a grammar must constrain the first token and the rest as one sequence"
_LOGPROBS = "the first token's log-probabilities stay on the prefill engine"
_NOT_IDS = "not expressible as a token-id prompt"


def _truthy(value: Any) -> bool:
    return value not in (None, False, 0, "", [], {})


def _given(value: Any) -> bool:
    """Set at all: `logprobs: 0` still asks for the sampled token's log-probability."""
    return value is not None and value is not False


def _not_one(value: Any) -> bool:
    return value is not None and value != 1


def _chooses_tool(value: Any) -> bool:
    return value not in (None, "none", "auto")


def _grammar_format(value: Any) -> bool:
    return isinstance(value, dict) and value.get("type") not in (None, "text")


# (field, does this value need the decoder alone?, why)
_RUN_DIRECT: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("n", _not_one, _ONE_SEQUENCE),
    ("best_of", _not_one, _ONE_SEQUENCE),
    ("tools", _truthy, _CHAT_OUTPUT),
    ("functions", _truthy, _CHAT_OUTPUT),
    ("tool_choice", _chooses_tool, _CHAT_OUTPUT),
    ("function_call", _chooses_tool, _CHAT_OUTPUT),
    ("response_format", _grammar_format, _GRAMMAR),
    ("structured_outputs", _truthy, _GRAMMAR),
    ("guided_json", _truthy, _GRAMMAR),
    ("guided_regex", _truthy, _GRAMMAR),
    ("guided_choice", _truthy, _GRAMMAR),
    ("guided_grammar", _truthy, _GRAMMAR),
    ("logprobs", _given, _LOGPROBS),
    ("top_logprobs", _truthy, _LOGPROBS),
    ("prompt_logprobs", _given, _LOGPROBS),
    ("echo", _truthy, _NOT_IDS),
    ("suffix", _truthy, _NOT_IDS),
    ("prompt_embeds", _truthy, _NOT_IDS),
)


def unsupported(req: ClientRequest) -> Unsupported | None:
    """The first field LMCache PD cannot honour. Only a client's own `kv_transfer_params` is
    refused (the router owns that field in PD mode); everything else runs on the decoder alone."""
    p = req.payload
    if p.get("kv_transfer_params") is not None:
        return Unsupported(
            "kv_transfer_params", "the router sets kv_transfer_params in PD mode", direct=False
        )
    if _max_tokens(p) == 1:
        return Unsupported("max_tokens", "the prefill's first token is the whole answer")
    for name, needs_direct, why in _RUN_DIRECT:
        if name in p and needs_direct(p[name]):
            return Unsupported(name, why)
    if req.api == "chat" and not _text_only(p.get("messages")):
        return Unsupported("messages", "non-text content cannot travel as token ids")
    if req.api != "chat" and not _single_prompt(p.get("prompt")):
        return Unsupported("prompt", "LMCache PD runs one prompt per request")
    return None


def _max_tokens(payload: dict[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = payload.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _text_only(messages: Any) -> bool:
    if not isinstance(messages, list):
        return True  # validation answers malformed messages
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(
            not (isinstance(part, dict) and part.get("type") == "text") for part in content
        ):
            return False
    return True


def _single_prompt(prompt: Any) -> bool:
    if isinstance(prompt, str):
        return True
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return True
    return isinstance(prompt, list) and len(prompt) == 1 and _single_prompt(prompt[0])


def tokenize_body(req: ClientRequest) -> dict[str, Any]:
    body: dict[str, Any] = {"model": req.model}
    if req.api == "chat":
        body["messages"] = req.payload["messages"]
    else:
        prompt = req.payload["prompt"]
        nested = isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list)
        body["prompt"] = prompt[0] if nested else prompt
    for name in TEMPLATE_FIELDS:
        if name in req.payload:
            body[name] = req.payload[name]
    return body


def _sampling(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k not in _NOT_FORWARDED}


def _min_tokens(payload: dict[str, Any]) -> int:
    value = payload.get("min_tokens")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def prefill_body(
    req: ClientRequest, tokens: list[int], req_id: str, host: str, init: list[int], alloc: list[int]
) -> dict[str, Any]:
    """One token from the ids, the KV pushed to the decoder at host/init/alloc ports."""
    body = _sampling(req.payload)
    body.update(prompt=tokens, max_tokens=1, stream=False)
    if _min_tokens(req.payload):
        body["min_tokens"] = 1  # no EOS as the first token, like the whole request
    body["kv_transfer_params"] = {
        "ret_first_tok": True,
        "disagg_spec": {
            "req_id": req_id,
            "receiver_host": host,
            "receiver_init_port": init,
            "receiver_alloc_port": alloc,
        },
    }
    return body


def decode_body(req: ClientRequest, tokens: list[int], first_tok: int) -> dict[str, Any]:
    """The rest of the answer: the ids plus the first token, one token less to generate."""
    body = _sampling(req.payload)
    body["prompt"] = [*tokens, first_tok]
    body["stream"] = req.stream
    limit = _max_tokens(req.payload)
    if limit is not None:
        body["max_tokens"] = limit - 1  # >= 1: max_tokens 1 runs direct
    if _min_tokens(req.payload) > 1:
        body["min_tokens"] = _min_tokens(req.payload) - 1
    if req.stream and req.include_usage:
        body["stream_options"] = {"include_usage": True}
    return body
