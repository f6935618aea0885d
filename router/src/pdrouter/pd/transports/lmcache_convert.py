"""LMCache PD answers in the client's shape: the prefiller's first token in front of the
decoder's completions output, converted to chat output for chat clients."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from pdrouter.proxy.context import ClientRequest
from pdrouter.proxy.outcome import BodyOutcome, Outcome, StreamOutcome


class AnswerConverter:
    """Puts the prefiller's first token in front of the decoder's answer and converts
    completions output to chat output for chat clients."""

    def __init__(self, req: ClientRequest, first_text: str, prompt_tokens: int) -> None:
        self.chat = req.api == "chat"
        self.model = req.model
        self.first_text = first_text
        self.prompt_tokens = prompt_tokens
        self.id = ("chatcmpl-" if self.chat else "cmpl-") + req.request_id
        self.include_usage = req.stream and req.include_usage

    def _event(self, text: str | None, finish: Any = None, role: bool = False) -> bytes:
        created = int(time.time())
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant"} if role else {}
            if text is not None:
                delta["content"] = text
            obj: dict[str, Any] = {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": self.model,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
        else:
            obj = {
                "id": self.id,
                "object": "text_completion",
                "created": created,
                "model": self.model,
                "choices": [
                    {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
                ],
            }
        return b"data: " + orjson.dumps(obj) + b"\n\n"

    async def stream(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        if self.chat:
            yield self._event("", role=True)
        yield self._event(self.first_text)
        buffer = b""
        async for chunk in chunks:
            buffer += chunk
            *events, buffer = buffer.split(b"\n\n")
            out = b"".join(self._convert(e) for e in events)
            if out:
                yield out
        if buffer.strip():
            yield self._convert(buffer)

    def _convert(self, event: bytes) -> bytes:
        if not event.startswith(b"data: "):
            return b""
        data = event[6:].strip()
        if data == b"[DONE]":
            return b"data: [DONE]\n\n"
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return b""
        if not isinstance(obj, dict):
            return b""
        if "error" in obj:
            return b"data: " + data + b"\n\n"
        usage = obj.get("usage")
        choices = obj.get("choices") or []
        if not choices and isinstance(usage, dict):
            usage = dict(usage)
            usage["prompt_tokens"] = self.prompt_tokens
            usage["completion_tokens"] = int(usage.get("completion_tokens", 0)) + 1
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            out = {
                "id": self.id,
                "object": "chat.completion.chunk" if self.chat else "text_completion",
                "created": obj.get("created", int(time.time())),
                "model": self.model,
                "choices": [],
                "usage": usage,
            }
            return b"data: " + orjson.dumps(out) + b"\n\n"
        if not self.chat:
            obj["id"] = self.id
            obj["model"] = self.model
            return b"data: " + orjson.dumps(obj) + b"\n\n"
        choice = choices[0] if isinstance(choices[0], dict) else {}
        return self._event(choice.get("text", ""), choice.get("finish_reason"))

    def body(self, raw: bytes) -> bytes:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw
        if not isinstance(obj, dict) or "choices" not in obj:
            return raw
        choice = obj["choices"][0] if obj["choices"] else {}
        text = self.first_text + str(choice.get("text", ""))
        got = obj.get("usage")
        completion = (int(got.get("completion_tokens", 0)) if isinstance(got, dict) else 0) + 1
        usage = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }
        if self.chat:
            out = {
                "id": self.id,
                "object": "chat.completion",
                "created": obj.get("created"),
                "model": self.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "logprobs": None,
                        "finish_reason": choice.get("finish_reason"),
                    }
                ],
                "usage": usage,
            }
        else:
            out = {
                **obj,
                "id": self.id,
                "model": self.model,
                "usage": usage,
                "choices": [{**choice, "text": text}],
            }
        return orjson.dumps(out)


def first_token_answer(converter: AnswerConverter, stream: bool, finish: Any) -> Outcome:
    """The whole answer when the prefill stopped at its first token (EOS or a stop string): the
    converter gets an empty decoder answer, so both paths build the same shapes."""
    if not stream:
        empty = {
            "object": "text_completion",
            "created": int(time.time()),
            "choices": [{"index": 0, "text": "", "logprobs": None, "finish_reason": finish}],
            "usage": {},
        }
        return BodyOutcome(200, converter.body(orjson.dumps(empty)))
    events: list[dict[str, Any]] = [
        {"choices": [{"index": 0, "text": "", "finish_reason": finish}]}
    ]
    if converter.include_usage:
        events.append({"choices": [], "usage": {"completion_tokens": 0}})
    sse = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"

    async def upstream() -> AsyncIterator[bytes]:
        yield sse

    return StreamOutcome(converter.stream(upstream()))
