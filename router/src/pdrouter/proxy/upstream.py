"""Shared steps of talking to one engine: headers, error mapping, and the streaming relay."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import orjson

from pdrouter.proxy.client import EngineBrokenStream, EngineResponse, EngineTimeout
from pdrouter.proxy.context import ClientRequest
from pdrouter.proxy.errors import RouterError, engine_message, upstream_truncated
from pdrouter.proxy.rawclient import RawResponse
from pdrouter.proxy.relay import PushRelay, StreamClock, stream_failure
from pdrouter.proxy.tracking import EngineCall
from pdrouter.stats.router_metrics import RouterMetrics

if TYPE_CHECKING:
    from pdrouter.tracing.spans import RequestTrace


def engine_headers(
    forward: dict[str, str], request_id: str, trace: RequestTrace | None = None
) -> dict[str, str]:
    headers = {"content-type": "application/json", "x-request-id": request_id}
    headers.update(forward)
    if trace is not None:
        trace.inject(headers)  # the engine's spans become children of this leg's span
    return headers


def error_detail(body: bytes) -> str:
    """The message inside an engine's error body, or a short prefix of the raw body."""
    return engine_message(body)


def is_json_object(body: bytes) -> bool:
    """A 200 answer that is not a JSON object is the engine's failure, not a success."""
    try:
        return isinstance(orjson.loads(body), dict)
    except orjson.JSONDecodeError:
        return False


async def relay_chunks(
    resp: EngineResponse,
    call: EngineCall,
    metrics: RouterMetrics,
    model: str,
    arrived: float,
    first_token_seen: bool = False,
) -> AsyncIterator[bytes]:
    """Yield the engine's stream unchanged while timing TTFT/ITL; map failures to RouterError.

    A stream that ends without `data: [DONE]` is reported as broken, never as success.
    """
    clock = StreamClock(call, metrics, model, arrived, first_token_seen)
    name = call.engine.endpoint.display_name
    tail = b""
    try:
        try:
            async for chunk in resp.chunks():
                clock.on_chunk(chunk, time.monotonic())
                tail = (tail + chunk)[-32:]
                yield chunk
        except (EngineTimeout, EngineBrokenStream) as exc:
            call.close("error", engine_fault=True)
            raise stream_failure(exc, name) from None
        if b"[DONE]" not in tail:
            call.close("error", engine_fault=True)
            raise upstream_truncated(name)
        call.close("ok")
    finally:
        clock.flush()
        call.close("cancelled")  # no-op unless the client went away mid-stream


def push_relay(
    resp: EngineResponse,
    call: EngineCall,
    metrics: RouterMetrics,
    req: ClientRequest,
    idle_timeout: float,
    map_error: Callable[[RouterError], RouterError] | None = None,
) -> PushRelay | None:
    """The push form of relay_chunks, for responses of the httptools client."""
    if not isinstance(resp, RawResponse):
        return None
    clock = StreamClock(call, metrics, req.model, req.arrived)
    return PushRelay(resp, clock, idle_timeout, map_error)
