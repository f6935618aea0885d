"""The PD fault matrix as data: which engine misbehaves how, and what the client must get.

Slots name the engines: P0/P1 prefill, D0/D1 decode. Slot 0 is the one the router picks first
when all are idle (ties break by engine id), so a fault on it exercises the retry path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.faults.stack import DEADLINE_S, SLACK_S

F = dict[str, dict[str, Any]]  # fault mode -> options


@dataclass(frozen=True)
class Scenario:
    """One row: faults per engine slot (P0/P1 prefill, D0/D1 decode; slot 0 is picked first)."""

    id: str
    router: str  # "1p1d", "2p2d" or "recompute" (1P1D with --pd-on-missing-kv recompute)
    status: int
    faults: dict[str, F] = field(default_factory=dict)
    kill: tuple[str, ...] = ()
    stream: bool = False
    code: str | None = None  # error code (JSON body, or the final SSE event for streams)
    phase: str | None = None  # x-pdstack-pd-phase
    deadlines: int = 0  # how many deadlines may pass before the answer
    charged: tuple[str, ...] = ()  # engines whose failure the router must count
    untouched: tuple[str, ...] = ()  # engines that must not have seen a request
    metric: tuple[str, dict[str, str]] | None = None  # a counter that must grow
    retry_after: str | None = None  # the engine's Retry-After, passed through
    engine_body: bool = False  # the error body is the engine's own (its type, code, param)
    xfail: str = ""

    @property
    def bound(self) -> float:
        return self.deadlines * DEADLINE_S + SLACK_S

    @property
    def expected(self) -> str:
        if self.stream and self.status == 200 and self.code:
            return f"200 stream, final SSE error `{self.code}` + [DONE]"
        if self.code:
            text = f"{self.status} `{self.code}`" + (f" phase `{self.phase}`" if self.phase else "")
            if self.engine_body:
                text += ", the engine's error body"
            if self.retry_after:
                text += f", Retry-After {self.retry_after}"
            return text
        return f"{self.status}" + (" (via retry)" if self.charged else "")


def _s(id: str, router: str, status: int, **kw: Any) -> Scenario:
    return Scenario(id=id, router=router, status=status, **kw)


RETRY = ("pdstack_router_retries_total", {"phase": "prefill"})
DRETRY = ("pdstack_router_retries_total", {"phase": "decode"})
SCENARIOS = [
    # --- prefill leg ------------------------------------------------------------------------
    _s("prefill down, 2nd prefill", "2p2d", 200, kill=("P0",), charged=("P0",), metric=RETRY),
    _s(
        "prefill down, only one",
        "1p1d",
        502,
        kill=("P0",),
        code="prefill_failed",
        phase="prefill",
        charged=("P0",),
        untouched=("D0",),
    ),
    _s(
        "prefill refusing, 2nd prefill",
        "2p2d",
        200,
        faults={"P0": {"refuse": {}}},
        charged=("P0",),
        metric=RETRY,
    ),
    _s(
        "prefill refusing, only one",
        "1p1d",
        502,
        faults={"P0": {"refuse": {}}},
        code="prefill_failed",
        phase="prefill",
        charged=("P0",),
        untouched=("D0",),
    ),
    _s(
        "prefill 5xx, 2nd prefill",
        "2p2d",
        200,
        faults={"P0": {"http_error": {"status": 503}}},
        charged=("P0",),
        metric=RETRY,
    ),
    _s(
        "prefill 5xx, only one",
        "1p1d",
        502,
        faults={"P0": {"http_error": {"status": 500}}},
        code="prefill_failed",
        phase="prefill",
        charged=("P0",),
        untouched=("D0",),
    ),
    _s(
        "prefill hanging, 2nd prefill",
        "2p2d",
        200,
        faults={"P0": {"hang": {}}},
        deadlines=1,
        charged=("P0",),
        metric=RETRY,
    ),
    _s(
        "prefill hanging, only one",
        "1p1d",
        504,
        faults={"P0": {"hang": {}}},
        code="timeout",
        phase="prefill",
        deadlines=1,
        charged=("P0",),
        untouched=("D0",),
    ),
    _s(
        "prefill slow beyond deadline, 2nd prefill",
        "2p2d",
        200,
        faults={"P0": {"slow": {"delay_ms": 3000}}},
        deadlines=1,
        charged=("P0",),
        metric=RETRY,
    ),
    _s(
        "prefill slow beyond deadline, only one",
        "1p1d",
        504,
        faults={"P0": {"slow": {"delay_ms": 3000}}},
        code="timeout",
        phase="prefill",
        deadlines=1,
        charged=("P0",),
    ),
    _s(
        "prefill invalid JSON, only one",
        "1p1d",
        502,
        faults={"P0": {"invalid_json": {}}},
        code="prefill_failed",
        phase="prefill",
        charged=("P0",),
        untouched=("D0",),
    ),
    _s(
        "prefill without KV params, fail",
        "1p1d",
        502,
        faults={"P0": {"no_kv_params": {}}},
        code="kv_transfer_missing",
        phase="kv_transfer",
        untouched=("D0",),
        metric=("pdstack_router_pd_missing_kv_total", {"action": "fail"}),
    ),
    _s(
        "prefill without KV params, recompute",
        "recompute",
        200,
        faults={"P0": {"no_kv_params": {}}},
        metric=("pdstack_router_pd_decisions_total", {"decision": "recompute"}),
    ),
    _s(
        "prefill busy (503 with Retry-After), only one",
        "1p1d",
        503,
        faults={"P0": {"http_error": {"status": 503, "retry_after": 7}}},
        code="engine_overloaded",
        phase="prefill",
        retry_after="7",
        engine_body=True,
        charged=("P0",),
        untouched=("D0",),
    ),
    _s(
        "prefill rate-limited (429), 2nd prefill",
        "2p2d",
        200,
        faults={"P0": {"http_error": {"status": 429}}},
        charged=("P0",),
        metric=RETRY,
    ),
    # --- decode leg -------------------------------------------------------------------------
    _s(
        "decode busy (503 with Retry-After), only one",
        "1p1d",
        503,
        faults={"D0": {"http_error": {"status": 503, "retry_after": 7}}},
        code="engine_overloaded",
        phase="decode",
        retry_after="7",
        engine_body=True,
        charged=("D0",),
    ),
    _s(
        "decode rate-limited (429), 2nd decode",
        "2p2d",
        200,
        faults={"D0": {"http_error": {"status": 429}}},
        charged=("D0",),
        metric=DRETRY,
    ),
    _s("decode down, 2nd decode", "2p2d", 200, kill=("D0",), charged=("D0",), metric=DRETRY),
    _s(
        "decode down, only one",
        "1p1d",
        502,
        kill=("D0",),
        code="decode_failed",
        phase="decode",
        charged=("D0",),
    ),
    _s(
        "decode 5xx, 2nd decode",
        "2p2d",
        200,
        faults={"D0": {"http_error": {}}},
        charged=("D0",),
        metric=DRETRY,
    ),
    _s(
        "decode 5xx, only one",
        "1p1d",
        502,
        faults={"D0": {"http_error": {}}},
        code="decode_failed",
        phase="decode",
        charged=("D0",),
    ),
    _s(
        "decode 5xx, only one, stream",
        "1p1d",
        502,
        faults={"D0": {"http_error": {}}},
        stream=True,
        code="decode_failed",
        phase="decode",
        charged=("D0",),
    ),
    _s(
        "decode hanging before headers (past --non-stream-timeout)",
        "1p1d",
        504,
        faults={"D0": {"hang": {}}},
        code="timeout",
        phase="decode",
        deadlines=2,
        charged=("D0",),
    ),
    _s(
        "decode answer slower than --first-byte-timeout, non-stream",
        "1p1d",
        200,
        faults={"D0": {"slow": {"delay_ms": 1500}}},
        deadlines=2,
    ),
    _s(
        "decode hanging before headers, stream",
        "1p1d",
        504,
        faults={"D0": {"hang": {}}},
        stream=True,
        code="timeout",
        phase="decode",
        deadlines=1,
        charged=("D0",),
    ),
    _s(
        "decode hanging before first byte, stream",
        "1p1d",
        200,
        faults={"D0": {"hang_before_first_byte": {}}},
        stream=True,
        code="timeout",
        deadlines=1,
        charged=("D0",),
    ),
    _s(
        "decode dying mid-stream",
        "1p1d",
        200,
        faults={"D0": {"die_mid_stream": {"after_chunks": 2}}},
        stream=True,
        code="decode_failed",
        charged=("D0",),
    ),
    _s(
        "decode truncated stream",
        "1p1d",
        200,
        faults={"D0": {"truncated_stream": {"after_chunks": 2}}},
        stream=True,
        code="decode_failed",
        charged=("D0",),
    ),
    _s(
        "decode stalling mid-stream",
        "1p1d",
        200,
        faults={"D0": {"stall_mid_stream": {"after_chunks": 2}}},
        stream=True,
        code="timeout",
        deadlines=1,
        charged=("D0",),
    ),
    _s(
        "decode KV expired (policy fail)",
        "1p1d",
        502,
        faults={"D0": {"kv_expired": {}}},
        code="decode_failed",
        phase="decode",
        charged=("D0",),
    ),
    _s(
        "decode invalid JSON body",
        "1p1d",
        502,
        faults={"D0": {"invalid_json": {}}},
        code="decode_failed",
        phase="decode",
        charged=("D0",),
    ),
    # --- both legs --------------------------------------------------------------------------
    _s(
        "both legs failing, only one pair",
        "1p1d",
        502,
        faults={"P0": {"http_error": {}}, "D0": {"http_error": {}}},
        code="prefill_failed",
        phase="prefill",
        charged=("P0",),
        untouched=("D0",),
    ),
    _s(
        "both legs of a pair failing, 2P2D",
        "2p2d",
        200,
        faults={"P0": {"http_error": {}}, "D0": {"http_error": {}}},
        charged=("P0", "D0"),
        metric=DRETRY,
    ),
    _s(
        "all prefill engines down",
        "2p2d",
        502,
        kill=("P0", "P1"),
        code="prefill_failed",
        phase="prefill",
        charged=("P0", "P1"),
        untouched=("D0", "D1"),
    ),
]
