"""Typed errors the client sees, rendered as OpenAI-style JSON or as a final SSE event."""

from __future__ import annotations

import orjson

# Header naming the PD phase that failed and its reason, and whether a retry may succeed.
PD_REASON_HEADER = "x-pdstack-pd-reason"
PD_PHASE_HEADER = "x-pdstack-pd-phase"
RETRYABLE_HEADER = "x-pdstack-retryable"
# The OpenAI SDKs obey this header over their own status-code rules: "false" stops their
# automatic retries (two by default), which would repeat work an engine already spent.
SHOULD_RETRY_HEADER = "x-should-retry"


class RouterError(Exception):
    """An error with everything needed to answer the client and count it.

    `code` is the machine-readable reason (also the metrics label); `phase` is the request phase
    that failed (routing, prefill, decode, upstream); `retryable` tells clients whether sending
    the same request again may succeed; `spent` that an engine already worked on it (a deadline
    passed while it computed), so clients should not retry on their own. `message` is what the
    client reads and never names an engine's address; `detail` is the log line's version.
    `engine_body` is an engine's own error answer, passed through instead of ours.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "server_error",
        code: str = "internal_error",
        phase: str = "",
        retryable: bool = False,
        retry_after: int | str | None = None,
        pd: bool = False,
        param: str | None = None,
        spent: bool = False,
        detail: str | None = None,
        engine_body: bytes | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.phase = phase
        self.retryable = retryable
        self.retry_after = retry_after
        self.pd = pd
        self.param = param
        self.spent = spent
        self.detail = detail or message
        self.engine_body = engine_body

    def body(self) -> bytes:
        if self.engine_body is not None:
            return self.engine_body
        return orjson.dumps(
            {
                "error": {
                    "message": self.message,
                    "type": self.type,
                    "code": self.code,
                    "param": self.param,
                }
            }
        )

    def headers(self) -> dict[str, str]:
        headers = {
            RETRYABLE_HEADER: "true" if self.retryable else "false",
            SHOULD_RETRY_HEADER: "true" if self.retryable and not self.spent else "false",
        }
        if self.retry_after is not None:
            headers["retry-after"] = str(self.retry_after)
        if self.pd:
            headers[PD_REASON_HEADER] = self.code
            if self.phase:
                headers[PD_PHASE_HEADER] = self.phase
        return headers

    def sse_event(self) -> bytes:
        """The terminal event for a stream that already started: an error, then [DONE]."""
        body = self.body()
        if b"\n" in body:  # an engine's pretty-printed body would end the SSE event early
            body = orjson.dumps(orjson.loads(body))
        return b"data: " + body + b"\n\ndata: [DONE]\n\n"


def bad_request(
    message: str, code: str = "invalid_request", param: str | None = None
) -> RouterError:
    return RouterError(400, message, type="invalid_request_error", code=code, param=param)


def not_found_model(model: str) -> RouterError:
    return RouterError(
        404,
        f"The model `{model}` does not exist.",
        type="invalid_request_error",
        code="model_not_found",
        param="model",
    )


def no_engine(model: str, detail: str = "") -> RouterError:
    msg = f"no ready engine serves model {model!r}" + (f": {detail}" if detail else "")
    return RouterError(
        503,
        msg,
        type="service_unavailable",
        code="no_ready_engine",
        retryable=True,
        retry_after=1,
    )


# Engine failures: the client's message says what happened; the log line (detail) also says
# which engine, since engine addresses are internal to the deployment.


def upstream_unreachable(engine: str, detail: str) -> RouterError:
    return RouterError(
        502,
        "the engine could not be reached",
        type="upstream_error",
        code="engine_unreachable",
        phase="upstream",
        retryable=True,
        detail=f"engine {engine} could not be reached: {detail}",
    )


def upstream_failed(engine: str, status: int, detail: str) -> RouterError:
    return RouterError(
        502,
        f"the engine failed with HTTP {status}: {detail}",
        type="upstream_error",
        code="engine_error",
        phase="upstream",
        retryable=True,
        detail=f"engine {engine} failed with HTTP {status}: {detail}",
    )


def upstream_broken(engine: str, detail: str) -> RouterError:
    return RouterError(
        502,
        "the engine's answer broke off",
        type="upstream_error",
        code="engine_error",
        phase="upstream",
        retryable=True,
        detail=f"engine {engine} broke off: {detail}",
    )


def upstream_timeout(engine: str, what: str) -> RouterError:
    """A deadline passed while the engine had the request: it spent the time, so clients
    should not repeat that on their own (x-should-retry: false)."""
    return RouterError(
        504,
        f"the engine timed out ({what})",
        type="timeout",
        code="timeout",
        phase="upstream",
        retryable=True,
        spent=True,
        detail=f"engine {engine} timed out ({what})",
    )


# Engine answers the router passes on instead of its own: the request was judged invalid (4xx),
# or the engine is busy (429, 503: retryable, with the engine's Retry-After).
BUSY_STATUSES = frozenset({429, 503})


def engine_message(body: bytes) -> str:
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


def _openai_error_body(status: int, body: bytes) -> bytes:
    """The engine's own error object when it sent one (its type, code and param intact)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return body
    kind = "rate_limit_error" if status == 429 else "upstream_error"
    if status < 500 and status != 429:
        kind = "invalid_request_error"
    message = engine_message(body) or f"HTTP {status}"
    return orjson.dumps(
        {"error": {"message": message, "type": kind, "code": status, "param": None}}
    )


def engine_answer(
    status: int,
    body: bytes,
    retry_after: str | None,
    *,
    phase: str = "upstream",
    pd: bool = False,
    engine: str = "",
) -> RouterError:
    """An engine's 4xx/503 answer as the client's error: the engine's body, our headers."""
    busy = status in BUSY_STATUSES
    message = engine_message(body)
    return RouterError(
        status,
        message,
        type="upstream_error" if busy else "invalid_request_error",
        code="engine_overloaded" if busy else "engine_rejected",
        phase=phase,
        retryable=busy,
        retry_after=(retry_after or ("1" if busy else None)),
        pd=pd,
        detail=f"engine {engine} answered HTTP {status}: {message}",
        engine_body=_openai_error_body(status, body),
    )


def upstream_truncated(engine: str) -> RouterError:
    """The engine's stream ended without `data: [DONE]`."""
    return RouterError(
        502,
        "the engine ended the stream early",
        type="upstream_error",
        code="truncated_stream",
        phase="upstream",
        retryable=True,
        detail=f"engine {engine} ended the stream early",
    )
