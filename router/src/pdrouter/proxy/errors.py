"""Typed errors the client sees, rendered as OpenAI-style JSON or as a final SSE event."""

from __future__ import annotations

import orjson

# Header naming the PD phase that failed and its reason, and whether a retry may succeed.
PD_REASON_HEADER = "x-pdstack-pd-reason"
PD_PHASE_HEADER = "x-pdstack-pd-phase"
RETRYABLE_HEADER = "x-pdstack-retryable"


class RouterError(Exception):
    """An error with everything needed to answer the client and count it.

    `code` is the machine-readable reason (also the metrics label); `phase` is the request phase
    that failed (routing, prefill, decode, upstream); `retryable` tells clients whether sending
    the same request again may succeed.
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
        retry_after: int | None = None,
        pd: bool = False,
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

    def body(self) -> bytes:
        return orjson.dumps(
            {
                "error": {
                    "message": self.message,
                    "type": self.type,
                    "code": self.code,
                    "param": None,
                }
            }
        )

    def headers(self) -> dict[str, str]:
        headers = {RETRYABLE_HEADER: "true" if self.retryable else "false"}
        if self.retry_after is not None:
            headers["retry-after"] = str(self.retry_after)
        if self.pd:
            headers[PD_REASON_HEADER] = self.code
            if self.phase:
                headers[PD_PHASE_HEADER] = self.phase
        return headers

    def sse_event(self) -> bytes:
        """The terminal event for a stream that already started: an error, then [DONE]."""
        return b"data: " + self.body() + b"\n\ndata: [DONE]\n\n"


def bad_request(
    message: str, code: str = "invalid_request", param: str | None = None
) -> RouterError:
    return RouterError(400, message, type="invalid_request_error", code=code)


def not_found_model(model: str) -> RouterError:
    return RouterError(
        404,
        f"The model `{model}` does not exist.",
        type="invalid_request_error",
        code="model_not_found",
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


def upstream_unreachable(engine: str, detail: str) -> RouterError:
    return RouterError(
        502,
        f"engine {engine} could not be reached: {detail}",
        type="upstream_error",
        code="engine_unreachable",
        phase="upstream",
        retryable=True,
    )


def upstream_failed(engine: str, status: int, detail: str) -> RouterError:
    return RouterError(
        502,
        f"engine {engine} failed with HTTP {status}: {detail}",
        type="upstream_error",
        code="engine_error",
        phase="upstream",
        retryable=True,
    )


def upstream_timeout(engine: str, what: str) -> RouterError:
    return RouterError(
        504,
        f"engine {engine} timed out ({what})",
        type="timeout",
        code="timeout",
        phase="upstream",
        retryable=True,
    )


def upstream_truncated(engine: str) -> RouterError:
    """The engine's stream ended without `data: [DONE]`."""
    return RouterError(
        502,
        f"engine {engine} ended the stream early",
        type="upstream_error",
        code="truncated_stream",
        phase="upstream",
        retryable=True,
    )
