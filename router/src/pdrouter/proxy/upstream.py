"""Shared steps of talking to one engine: headers, error mapping, and the streaming relay."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import orjson

from pdrouter.proxy.client import EngineBrokenStream, EngineResponse, EngineTimeout
from pdrouter.proxy.errors import RouterError, upstream_failed, upstream_timeout
from pdrouter.proxy.tracking import EngineCall
from pdrouter.stats.router_metrics import RouterMetrics


def engine_headers(forward: dict[str, str], request_id: str) -> dict[str, str]:
    headers = {"content-type": "application/json", "x-request-id": request_id}
    headers.update(forward)
    return headers


def error_detail(body: bytes) -> str:
    """The message inside an engine's error body, or a short prefix of the raw body."""
    try:
        data = orjson.loads(body)
        if isinstance(data, dict):
            err = data.get("error", data)
            if isinstance(err, dict) and "message" in err:
                return str(err["message"])[:500]
            if "message" in data:
                return str(data["message"])[:500]
    except orjson.JSONDecodeError:
        pass
    return body[:200].decode("utf-8", "replace")


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
    ttft_hist = metrics.ttft.labels(model)
    itl_hist = metrics.itl.labels(model)
    name = call.engine.endpoint.display_name
    last = 0.0
    tail = b""
    try:
        try:
            async for chunk in resp.chunks():
                now = time.monotonic()
                if call.observe_chunk(chunk, now) and not first_token_seen:
                    ttft_hist.observe(now - arrived)
                    first_token_seen = True
                    last = now
                elif first_token_seen:
                    if last:
                        itl_hist.observe(now - last)
                    last = now
                tail = (tail + chunk)[-32:]
                yield chunk
        except EngineTimeout as exc:
            call.close("error", engine_fault=True)
            raise upstream_timeout(name, exc.what) from None
        except EngineBrokenStream as exc:
            call.close("error", engine_fault=True)
            raise upstream_failed(name, 200, f"stream broke: {exc}") from None
        if b"[DONE]" not in tail:
            call.close("error", engine_fault=True)
            raise RouterError(
                502,
                f"engine {name} ended the stream early",
                type="upstream_error",
                code="truncated_stream",
                phase="upstream",
                retryable=True,
            )
        call.close("ok")
    finally:
        call.close("cancelled")  # no-op unless the client went away mid-stream
