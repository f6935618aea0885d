"""vLLM's `kv_transfer_params` handshake (NixlConnector, and LMCache when it speaks it).

Prefill: the client's body shaped as one token, one sequence, no streaming (pd/shaping.py), and
a request for remote decode.
Decode: the client's own body plus the prefill's `kv_transfer_params`, verbatim.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from pdrouter.pd.shaping import prefill_fields
from pdrouter.pd.transports.base import (
    DecodeRequest,
    MissingKvParams,
    PrefillResult,
    PrefillSender,
    TransportDefaults,
)
from pdrouter.proxy.context import ClientRequest
from pdrouter.stats.engine_state import EngineState

REQUEST_REMOTE_DECODE: dict[str, Any] = {
    "do_remote_decode": True,
    "do_remote_prefill": False,
    "remote_engine_id": None,
    "remote_block_ids": None,
    "remote_host": None,
    "remote_port": None,
}


def prefill_payload(payload: dict[str, Any]) -> dict[str, Any]:
    body = prefill_fields(payload)
    body["kv_transfer_params"] = dict(REQUEST_REMOTE_DECODE)
    return body


def cached_tokens_of(response: dict[str, Any]) -> int | None:
    usage = response.get("usage")
    if not isinstance(usage, dict):
        return None
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
        return int(details["cached_tokens"])
    return 0


def rewrite_cached_tokens(data: dict[str, Any], cached: int) -> None:
    """Report the prefill leg's prompt-cache hits: the decoder counts the whole transferred
    prompt as cached, which says nothing about the prefix cache."""
    usage = data.get("usage")
    if isinstance(usage, dict):
        details = usage.get("prompt_tokens_details")
        if not isinstance(details, dict):
            details = {}
        details["cached_tokens"] = cached
        usage["prompt_tokens_details"] = details


def _rewrite_usage_body(cached: int) -> Any:
    def transform(body: bytes) -> bytes:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body
        if isinstance(data, dict) and "usage" in data:
            rewrite_cached_tokens(data, cached)
            return orjson.dumps(data)
        return body

    return transform


def _rewrite_usage_stream(cached: int) -> Any:
    async def transform(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        buffer = b""
        async for chunk in chunks:
            # Only the final usage event names prompt_tokens_details; everything else passes
            # through untouched and unbuffered.
            if not buffer and b'"usage"' not in chunk:
                yield chunk
                continue
            buffer += chunk
            if not buffer.endswith(b"\n\n"):
                continue
            yield _rewrite_events(buffer, cached)
            buffer = b""
        if buffer:
            yield _rewrite_events(buffer, cached)

    return transform


def _rewrite_events(data: bytes, cached: int) -> bytes:
    out = []
    for event in data.split(b"\n\n"):
        if event.startswith(b"data: {") and b'"usage"' in event:
            try:
                obj = orjson.loads(event[6:])
                if isinstance(obj, dict) and isinstance(obj.get("usage"), dict):
                    rewrite_cached_tokens(obj, cached)
                    out.append(b"data: " + orjson.dumps(obj))
                    continue
            except orjson.JSONDecodeError:
                pass
        out.append(event)
    return b"\n\n".join(out)


class NixlTransport(TransportDefaults):
    """Sequential P -> D handoff through `kv_transfer_params` (the vLLM NIXL protocol)."""

    name = "nixl"
    decode_retryable = True  # the prefill engine holds the blocks until its lease ends
    decoder_bound_at_prefill = False

    def __init__(self, override_remote_host: bool = False) -> None:
        self.override_remote_host = override_remote_host

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def prefill(
        self,
        req: ClientRequest,
        prefill: EngineState,
        decode: EngineState,
        send: PrefillSender,
        deadline: float,
    ) -> PrefillResult:
        response = await send(prefill, req.path, prefill_payload(req.payload), deadline)
        params = response.get("kv_transfer_params")
        result = PrefillResult(
            engine=prefill,
            response=response,
            kv_params=params if isinstance(params, dict) and params else None,
            cached_tokens=cached_tokens_of(response),
        )
        if result.kv_params is None:
            raise MissingKvParams(
                f"prefill engine {prefill.endpoint.display_name} returned no kv_transfer_params"
            )
        if self.override_remote_host:
            result.kv_params = {**result.kv_params, "remote_host": prefill.endpoint.host}
        return result

    def decode_request(
        self, req: ClientRequest, result: PrefillResult | None, decode: EngineState
    ) -> DecodeRequest:
        if result is None or result.kv_params is None:  # recompute: the client's own request
            return DecodeRequest(req.path, req.body, req.stream)
        body = dict(req.payload)
        body["kv_transfer_params"] = result.kv_params
        cached = result.cached_tokens or 0
        return DecodeRequest(
            req.path,
            orjson.dumps(body),
            req.stream,
            transform_stream=_rewrite_usage_stream(cached) if req.include_usage else None,
            transform_body=None if req.stream else _rewrite_usage_body(cached),
        )
