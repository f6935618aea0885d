"""Counters behind ``/metrics`` and the request log behind ``/admin/stats``."""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

# Headers a test may want to see as forwarded by the router (plus every x-* header).
_KEPT_HEADERS = ("authorization", "content-type", "user-agent", "traceparent", "tracestate")


@dataclass
class EngineCounters:
    """vLLM-like counters and gauges (token counts, like vLLM's prefix-cache counters)."""

    running: int = 0
    waiting: int = 0
    running_tokens: int = 0
    prefix_queries: int = 0
    prefix_hits: int = 0
    external_queries: int = 0
    external_hits: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    success: Counter[str] = field(default_factory=Counter)  # by finished_reason


class RequestLog:
    """Counts by path and kind, and the last requests as the engine received them."""

    def __init__(self, keep: int = 200) -> None:
        self.by_path: Counter[str] = Counter()
        self.by_kind: Counter[str] = Counter()
        self.by_status: Counter[str] = Counter()
        self.cancelled = 0
        self.kv_pulls_served = 0
        self.kv_pulls_failed = 0
        self.kv_loads_ok = 0
        self.kv_loads_failed = 0
        self.recent: deque[dict[str, Any]] = deque(maxlen=keep)
        self.probes: Counter[str] = Counter()  # /health and /metrics requests
        self.probe_auth: Counter[str] = Counter()  # their Authorization headers ("" if none)

    def record_probe(self, path: str, headers: Any) -> None:
        self.probes[path] += 1
        self.probe_auth[headers.get("authorization", "")] += 1

    def record(self, path: str, kind: str, headers: Any, body: Any) -> None:
        self.by_path[path] += 1
        self.by_kind[kind] += 1
        kept = {
            k.lower(): v
            for k, v in headers.items()
            if k.lower().startswith("x-") or k.lower() in _KEPT_HEADERS
        }
        self.recent.append(
            {"t": time.time(), "path": path, "kind": kind, "headers": kept, "body": body}
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "by_path": dict(self.by_path),
            "by_kind": dict(self.by_kind),
            "by_status": dict(self.by_status),
            "cancelled": self.cancelled,
            "kv_pulls_served": self.kv_pulls_served,
            "kv_pulls_failed": self.kv_pulls_failed,
            "kv_loads_ok": self.kv_loads_ok,
            "kv_loads_failed": self.kv_loads_failed,
            "probes": dict(self.probes),
            "probe_auth": dict(self.probe_auth),
            "recent": list(self.recent),
        }


def render_metrics(
    c: EngineCounters,
    *,
    model: str,
    legacy: bool,
    kv_usage: float,
    kv_held: int,
    override: dict[str, float],
) -> bytes:
    """Prometheus text with current vLLM names (or the old ones), ``engine="0"`` label."""
    labels = f'{{engine="0",model_name="{model}"}}'
    usage_name = "vllm:gpu_cache_usage_perc" if legacy else "vllm:kv_cache_usage_perc"
    prefix = "vllm:gpu_prefix_cache" if legacy else "vllm:prefix_cache"
    series: list[tuple[str, str, str, float]] = [
        ("vllm:num_requests_running", "gauge", labels, c.running),
        ("vllm:num_requests_waiting", "gauge", labels, c.waiting),
        (usage_name, "gauge", labels, kv_usage),
        (f"{prefix}_queries_total", "counter", labels, c.prefix_queries),
        (f"{prefix}_hits_total", "counter", labels, c.prefix_hits),
    ]
    if not legacy:
        series += [
            ("vllm:external_prefix_cache_queries_total", "counter", labels, c.external_queries),
            ("vllm:external_prefix_cache_hits_total", "counter", labels, c.external_hits),
            ("vllm:nixl_num_pending_sends", "gauge", labels, kv_held),
        ]
    series += [
        ("vllm:prompt_tokens_total", "counter", labels, c.prompt_tokens),
        ("vllm:generation_tokens_total", "counter", labels, c.generation_tokens),
    ]
    lines: list[str] = []
    seen: set[str] = set()
    for name, mtype, lab, current in series:
        value = override.get(name, current)
        lines.append(f"# HELP {name} Fake engine (test double) value.")
        lines.append(f"# TYPE {name} {mtype}")
        lines.append(f"{name}{lab} {float(value)}")
        seen.add(name)
    name = "vllm:request_success_total"
    lines.append(f"# HELP {name} Fake engine (test double) value.")
    lines.append(f"# TYPE {name} counter")
    for reason in sorted(set(c.success) | {"length", "stop"}):
        lab = f'{{engine="0",finished_reason="{reason}",model_name="{model}"}}'
        lines.append(f"{name}{lab} {float(override.get(name, c.success[reason]))}")
    seen.add(name)
    for name, value in override.items():  # overrides may add series the fake does not model
        if name not in seen:
            lines.append(f"# TYPE {name} gauge")
            lines.append(f"{name}{labels} {float(value)}")
    return ("\n".join(lines) + "\n").encode()
