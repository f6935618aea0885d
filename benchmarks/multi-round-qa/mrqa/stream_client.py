"""Stream one chat completion and time it: TTFT, inter-token gaps, end-to-end, tokens.

aiohttp is the client (why: a maintained asyncio client whose connection pool and streaming
reader stay cheap at hundreds of concurrent streams, where httpx's async pool costs noticeably
more CPU per request; the load generator must never be the bottleneck it measures).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

# Delta fields that carry generated text; reasoning models stream their thinking first, and
# that is output the user waits for, so it counts for TTFT and ITL.
_TEXT_FIELDS = ("content", "reasoning_content", "reasoning")
# Header a pdstack router sets on PD errors; its value names the failure more precisely.
PD_REASON_HEADER = "x-pdstack-pd-reason"


@dataclass
class RequestResult:
    """What one request did, as the client saw it. Times are seconds on the monotonic clock."""

    launched_at: float
    ok: bool = False
    reason: str = ""
    message: str = ""  # the server's error message, when it sent one
    http_status: int = 0
    ttft: float | None = None
    e2e: float | None = None
    gaps: list[float] = field(default_factory=list)
    content_chunks: int = 0
    usage_completion_tokens: int | None = None
    usage_prompt_tokens: int | None = None
    answer: str = ""

    @property
    def output_tokens(self) -> int:
        """Tokens generated: the server's usage count when sent, else content-bearing chunks."""
        if self.usage_completion_tokens is not None:
            return self.usage_completion_tokens
        return self.content_chunks

    @property
    def token_source(self) -> str:
        """Where ``output_tokens`` came from: ``usage`` or ``chunks``."""
        return "usage" if self.usage_completion_tokens is not None else "chunks"


@dataclass
class StreamRequest:
    """Everything needed to send one streamed chat completion."""

    url: str
    payload: dict[str, Any]
    headers: dict[str, str]
    timeout_s: float


class StreamFailure(Exception):
    """A request failed for a reason worth counting, with what the server said about it."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.message = message


def _error_message(error: Any) -> str:
    """The ``message`` of an OpenAI-style error object, shortened for a terminal line."""
    message = error.get("message") if isinstance(error, dict) else None
    return str(message)[:500] if message else ""


def _http_failure(status: int, body: bytes, headers: Any) -> StreamFailure:
    """Name a non-200 answer: ``http_<status>``, plus the PD reason or a string error code.

    Numeric codes and exception type names would only repeat the status, so they are left out.
    """
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        error = None
    detail = headers.get(PD_REASON_HEADER, "")
    if not detail:
        code = error.get("code") if isinstance(error, dict) else None
        detail = code if isinstance(code, str) and not code.isdigit() else ""
    message = _error_message(error) or body[:200].decode("utf-8", errors="replace").strip()
    return StreamFailure(f"http_{status}:{detail}" if detail else f"http_{status}", message)


def _apply_event(result: RequestResult, data: str, now: float, last_token_at: list[float]) -> bool:
    """Apply one SSE ``data:`` payload to ``result``; return True on ``[DONE]``."""
    if data == "[DONE]":
        return True
    try:
        event = json.loads(data)
    except ValueError as exc:
        raise StreamFailure("bad_chunk") from exc
    if not isinstance(event, dict):
        raise StreamFailure("bad_chunk")
    if "error" in event:
        # vLLM reports errors that happen after the 200 header as an in-stream event.
        error = event["error"] if isinstance(event["error"], dict) else {}
        code = error.get("code")
        named = isinstance(code, str) and not code.isdigit()
        reason = f"stream_error:{code}" if named else "stream_error"
        raise StreamFailure(reason, _error_message(error))
    usage = event.get("usage")
    if isinstance(usage, dict) and usage.get("completion_tokens") is not None:
        result.usage_completion_tokens = int(usage["completion_tokens"])
        if usage.get("prompt_tokens") is not None:
            result.usage_prompt_tokens = int(usage["prompt_tokens"])
    for choice in event.get("choices") or []:
        if not isinstance(choice, dict):
            raise StreamFailure("bad_chunk")
        delta = choice.get("delta") or {}  # a final chunk may carry only finish_reason
        if not isinstance(delta, dict):
            raise StreamFailure("bad_chunk")
        texts = [delta.get(name) for name in _TEXT_FIELDS]
        if not any(texts):
            continue
        result.answer += delta.get("content") or ""
        result.content_chunks += 1
        if result.ttft is None:
            result.ttft = now - result.launched_at
        else:
            result.gaps.append(now - last_token_at[0])
        last_token_at[0] = now
    return False


async def _read_stream(response: aiohttp.ClientResponse, result: RequestResult) -> None:
    """Consume an SSE body, timing each content-bearing chunk as its line arrives."""
    data_lines: list[str] = []
    last_token_at = [result.launched_at]
    done = False
    async for raw in response.content:
        now = time.monotonic()
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if line.startswith("data:"):
            data_lines.append(line[5:].lstrip(" "))
            # OpenAI-style servers send one data line per event: dispatch it now, so the
            # timestamp is the line's arrival rather than the following blank line's.
            done = _apply_event(result, "\n".join(data_lines), now, last_token_at)
            data_lines.clear()
            if done:
                break
        # Blank lines, comments (":") and other SSE fields carry nothing we time.
    if not done:
        raise StreamFailure("incomplete_stream")


async def stream_chat(session: aiohttp.ClientSession, request: StreamRequest) -> RequestResult:
    """Send one streamed chat completion and measure it; never raises for request failures."""
    result = RequestResult(launched_at=time.monotonic())
    try:
        async with asyncio.timeout(request.timeout_s):
            async with session.post(
                request.url, json=request.payload, headers=request.headers
            ) as response:
                result.http_status = response.status
                if response.status != 200:
                    body = await response.read()
                    raise _http_failure(response.status, body, response.headers)
                await _read_stream(response, result)
        if result.ttft is None:
            raise StreamFailure("no_content")
        result.ok = True
    except StreamFailure as exc:
        result.reason, result.message = exc.reason, exc.message
    except TimeoutError:
        result.reason = "timeout"
    except aiohttp.ClientConnectorError as exc:
        result.reason, result.message = "connect_error", str(exc)
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError):
        result.reason = "disconnected"
    except aiohttp.ClientError as exc:
        result.reason = f"client_error:{type(exc).__name__}"
    except ValueError:
        result.reason = "bad_chunk"  # e.g. a line longer than the reader's limit
    except Exception as exc:  # one odd response must never stop the whole benchmark
        result.reason = f"unexpected:{type(exc).__name__}"
    result.e2e = time.monotonic() - result.launched_at
    return result
