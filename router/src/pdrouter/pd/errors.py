"""The typed errors of a disaggregated request: reason code, failed phase, retryability."""

from __future__ import annotations

from pdrouter.proxy.errors import RouterError

PREFILL_UNAVAILABLE = "prefill_unavailable"
DECODE_UNAVAILABLE = "decode_unavailable"
PREFILL_FAILED = "prefill_failed"
KV_TRANSFER_MISSING = "kv_transfer_missing"
DECODE_FAILED = "decode_failed"
TIMEOUT = "timeout"


def pd_error(
    status: int,
    code: str,
    phase: str,
    message: str,
    retryable: bool,
    detail: str | None = None,
    spent: bool = False,
) -> RouterError:
    """`message` goes to the client (no engine addresses); `detail`, if given, to the log."""
    return RouterError(
        status,
        message,
        type="pd_error",
        code=code,
        phase=phase,
        retryable=retryable,
        retry_after=1 if status == 503 else None,
        pd=True,
        detail=detail,
        spent=spent,
    )


def unavailable(phase: str, message: str) -> RouterError:
    code = PREFILL_UNAVAILABLE if phase == "prefill" else DECODE_UNAVAILABLE
    return pd_error(503, code, phase, message, retryable=True)


def failed(phase: str, message: str, detail: str | None = None) -> RouterError:
    code = PREFILL_FAILED if phase == "prefill" else DECODE_FAILED
    return pd_error(502, code, phase, message, True, detail)


def timed_out(phase: str, message: str, detail: str | None = None) -> RouterError:
    # The engine was computing when the deadline passed: clients should not repeat that work
    # on their own (x-should-retry: false), though sending it again may succeed.
    return pd_error(504, TIMEOUT, phase, message, True, detail, spent=True)


def kv_missing(message: str, detail: str | None = None) -> RouterError:
    return pd_error(502, KV_TRANSFER_MISSING, "kv_transfer", message, True, detail)
