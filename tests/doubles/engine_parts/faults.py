"""Fault injection for the fake engine.

Faults come from the live config (``knobs.faults``: mode -> options, optionally limited by
``count``) or per request from the ``X-Fault`` header, e.g.
``X-Fault: http_error;status=503;kind=prefill, slow;delay_ms=200``. ``kind`` limits a fault
to one request kind (``prefill``, ``decode``, ``plain``, ``lmcache_prefill``) so a header the
router copies to both PD legs can still target one leg.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Modes that act on one inference request.
REQUEST_MODES = frozenset(
    {
        "http_error",  # answer `status` (default 500) with a vLLM-style error body
        "refuse",  # accept the connection and close it without answering (RST)
        "hang",  # never answer (no status line)
        "hang_before_first_byte",  # streams: headers sent, then no data; non-stream: hang
        "stall_mid_stream",  # send `after_chunks` chunks, then stop sending (no close)
        "die_mid_stream",  # send `after_chunks` chunks, then abort the TCP connection
        "truncated_stream",  # send `after_chunks` chunks (default all), end without [DONE]
        "invalid_json",  # 200 with a broken JSON body (or a broken SSE data line)
        "slow",  # `delay_ms` extra before the first token
        "no_kv_params",  # prefill answers without kv_transfer_params
        "kv_expired",  # decode treats the KV as expired (then --kv-load-failure-policy)
        "lmcache_no_notify",  # LMCache prefill never sends ProxyNotif
        "lmcache_partial_notify",  # only `ranks` (default tp_size - 1) notifications
    }
)
# Modes that act on the engine's probes.
ENGINE_MODES = frozenset({"health_fail", "metrics_hang", "metrics_error"})
FAULT_MODES = REQUEST_MODES | ENGINE_MODES
_INT_OPTIONS = ("status", "after_chunks", "delay_ms", "count", "ranks")


@dataclass
class FaultSpec:
    """One fault with its options (only the ones a mode uses matter)."""

    mode: str
    status: int = 500
    after_chunks: int | None = None
    delay_ms: int = 0
    count: int | None = None  # config faults: how many more requests it applies to
    ranks: int | None = None
    kind: str | None = None
    message: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def options(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in (*_INT_OPTIONS, "kind", "message"):
            value = getattr(self, name)
            is_default = (name == "status" and value == 500) or (name == "delay_ms" and value == 0)
            if value is not None and not is_default:
                out[name] = value
        return out

    @classmethod
    def from_options(cls, mode: str, opts: dict[str, Any]) -> FaultSpec:
        if mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {mode!r}")
        spec = cls(mode=mode)
        for key, value in opts.items():
            if key in _INT_OPTIONS:
                setattr(spec, key, int(value))
            elif key in ("kind", "message"):
                setattr(spec, key, str(value))
            else:
                spec.extra[key] = value
        return spec


def parse_fault_list(text: str) -> list[FaultSpec]:
    """Parse ``mode;k=v;k=v, mode2`` into specs; raises ValueError on unknown modes."""
    specs: list[FaultSpec] = []
    for raw_item in text.split(","):
        item = raw_item.strip()
        if not item:
            continue
        mode, *pairs = [p.strip() for p in item.split(";")]
        opts: dict[str, Any] = {}
        for pair in pairs:
            if "=" not in pair:
                raise ValueError(f"fault option {pair!r} is not key=value")
            k, v = pair.split("=", 1)
            opts[k.strip()] = v.strip()
        specs.append(FaultSpec.from_options(mode, opts))
    return specs


NO_FAULTS: dict[str, FaultSpec] = {}


class FaultBoard:
    """Decides which faults hit one request; consumes ``count`` on config faults."""

    def __init__(self, config: dict[str, dict[str, Any]]) -> None:
        self.load(config)

    def load(self, config: dict[str, dict[str, Any]]) -> None:
        self.active = {m: FaultSpec.from_options(m, o) for m, o in config.items()}
        self._request_active = any(m in REQUEST_MODES for m in self.active)

    def engine_fault(self, mode: str) -> FaultSpec | None:
        return self.active.get(mode)

    def for_request(self, kind: str, header: str | None) -> dict[str, FaultSpec]:
        if header is None and not self._request_active:
            return NO_FAULTS  # the hot path: nothing injected
        chosen: dict[str, FaultSpec] = {}
        if header:
            for spec in parse_fault_list(header):
                if spec.mode in REQUEST_MODES and spec.kind in (None, kind):
                    chosen[spec.mode] = spec
        for mode, spec in list(self.active.items()):
            if mode not in REQUEST_MODES or mode in chosen or spec.kind not in (None, kind):
                continue
            chosen[mode] = spec
            if spec.count is not None:
                spec.count -= 1
                if spec.count <= 0:
                    del self.active[mode]
        self._request_active = any(m in REQUEST_MODES for m in self.active)
        return chosen

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {m: s.options() for m, s in self.active.items()}
