"""LMCache's native PD mode (seed 001): the router is the PD proxy.

The router tokenizes the prompt, asks the prefiller to push the KV to a chosen decoder
(`disagg_spec`), waits for the prefiller's "KV ready" notifications on its ZMQ PULL socket, then
asks the decoder to continue from the prompt plus the prefiller's first token. The decoder
always speaks the completions API; chat clients get their answer converted to chat chunks.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson

from pdrouter.pd.transports.base import (
    DecodeRequest,
    KvWaitTimeout,
    MissingKvParams,
    PrefillResult,
    PrefillSender,
)
from pdrouter.pd.transports.lmcache_notify import KvReadyListener
from pdrouter.proxy.context import ClientRequest
from pdrouter.stats.engine_state import EngineState

# Request fields that do not apply to a token-id completions call on the decoder.
_NOT_FORWARDED = (
    "messages",
    "prompt",
    "stream_options",
    "kv_transfer_params",
    "n",
    "max_completion_tokens",
    "tools",
    "tool_choice",
    "response_format",
    "add_generation_prompt",
    "chat_template",
    "chat_template_kwargs",
)


def _sampling(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k not in _NOT_FORWARDED}


def _max_tokens(payload: dict[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = payload.get(name)
        if isinstance(value, int):
            return value
    return None


class LmcacheTransport:
    name = "lmcache"
    decode_retryable = False  # the KV was pushed into one decoder's buffer
    decoder_bound_at_prefill = True

    def __init__(self, listener: KvReadyListener, wait_timeout: float) -> None:
        self.listener = listener
        self.wait_timeout = wait_timeout
        # Unique across router replicas and restarts: a random instance id plus a counter.
        self._instance = uuid.uuid4().hex[:12]
        self._counter = itertools.count(1)

    async def start(self) -> None:
        await self.listener.start()

    async def stop(self) -> None:
        await self.listener.stop()

    def new_request_id(self) -> str:
        return f"pdstack-{self._instance}-{next(self._counter)}"

    async def prefill(
        self,
        req: ClientRequest,
        prefill: EngineState,
        decode: EngineState,
        send: PrefillSender,
        deadline: float,
    ) -> PrefillResult:
        ep = decode.endpoint
        if not ep.lmcache_init_ports or not ep.lmcache_alloc_ports:
            raise MissingKvParams(
                f"decode engine {ep.display_name} publishes no LMCache receiver ports"
            )
        started = time.monotonic()
        tok_body: dict[str, Any] = {"model": req.model}
        if req.api == "chat":
            tok_body["messages"] = req.payload["messages"]
        else:
            tok_body["prompt"] = req.payload["prompt"]
        tokenized = await send(prefill, "/tokenize", tok_body, deadline)
        tokens = tokenized.get("tokens")
        if not isinstance(tokens, list) or not tokens:
            raise MissingKvParams(f"engine {prefill.endpoint.display_name} returned no tokens")

        req_id = self.new_request_id()
        body = _sampling(req.payload)
        body.update(
            {
                "prompt": tokens,
                "max_tokens": 1,
                "stream": False,
                "kv_transfer_params": {
                    "ret_first_tok": True,
                    "disagg_spec": {
                        "req_id": req_id,
                        "receiver_host": ep.host,
                        "receiver_init_port": list(ep.lmcache_init_ports),
                        "receiver_alloc_port": list(ep.lmcache_alloc_ports),
                    },
                },
            }
        )
        ready = self.listener.register(req_id, len(ep.lmcache_init_ports))
        try:
            remaining = max(deadline - (time.monotonic() - started), 0.001)
            response = await send(prefill, "/v1/completions", body, remaining)
            params = response.get("kv_transfer_params")
            first = params.get("first_tok") if isinstance(params, dict) else None
            if not isinstance(first, int):
                raise MissingKvParams(
                    f"prefill engine {prefill.endpoint.display_name} returned no first_tok"
                )
            try:
                async with asyncio.timeout(self.wait_timeout):
                    await ready
            except TimeoutError:
                raise KvWaitTimeout(
                    f"no KV-ready notification for {req_id} within {self.wait_timeout:g}s"
                ) from None
        finally:
            self.listener.forget(req_id)
        choices = response.get("choices") or [{}]
        first_text = choices[0].get("text", "") if isinstance(choices[0], dict) else ""
        return PrefillResult(
            prefill,
            response,
            params,
            extra={
                "tokens": tokens,
                "first_tok": first,
                "first_text": first_text,
                "req_id": req_id,
            },
        )

    def decode_request(
        self, req: ClientRequest, result: PrefillResult | None, decode: EngineState
    ) -> DecodeRequest:
        if result is None:  # recompute on the decoder: the client's own request
            return DecodeRequest(req.path, req.body, req.stream)
        extra = result.extra
        limit = _max_tokens(req.payload)
        body = _sampling(req.payload)
        body["prompt"] = [*extra["tokens"], extra["first_tok"]]
        body["stream"] = req.stream
        if limit is not None:
            body["max_tokens"] = max(limit - 1, 1)
        if req.stream and req.include_usage:
            body["stream_options"] = {"include_usage": True}
        converter = _Converter(req, extra["first_text"], len(extra["tokens"]))
        return DecodeRequest(
            "/v1/completions",
            orjson.dumps(body),
            req.stream,
            transform_stream=converter.stream,
            transform_body=converter.body,
        )


class _Converter:
    """Puts the prefiller's first token in front of the decoder's answer and converts
    completions output to chat output for chat clients."""

    def __init__(self, req: ClientRequest, first_text: str, prompt_tokens: int) -> None:
        self.chat = req.api == "chat"
        self.model = req.model
        self.first_text = first_text
        self.prompt_tokens = prompt_tokens
        self.id = ("chatcmpl-" if self.chat else "cmpl-") + req.request_id

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
