"""Per-QPS-level statistics: percentiles, throughput and goodput from request results."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from mrqa.stream_client import RequestResult

PERCENTILES = (50, 90, 99)


def percentile(values: list[float], pct: float) -> float | None:
    """Linear-interpolation percentile (numpy's default method); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def distribution_ms(values_s: list[float]) -> dict[str, float | None]:
    """p50/p90/p99 and mean of seconds, in milliseconds."""
    ms = [v * 1000.0 for v in values_s]
    out: dict[str, float | None] = {f"p{p}": percentile(ms, p) for p in PERCENTILES}
    out["mean"] = sum(ms) / len(ms) if ms else None
    return out


@dataclass
class SloSpec:
    """Goodput SLOs; a request counts as good when it succeeded and meets every SLO given."""

    ttft_ms: float | None = None
    itl_ms: float | None = None
    # Which of a request's inter-token gaps the ITL SLO judges: mean (TPOT-like), p90, p99, max.
    itl_stat: str = "mean"

    def request_itl_ms(self, result: RequestResult) -> float | None:
        """The single ITL figure of one request that the SLO is checked against."""
        if not result.gaps:
            return None
        gaps_ms = [g * 1000.0 for g in result.gaps]
        if self.itl_stat == "mean":
            return sum(gaps_ms) / len(gaps_ms)
        if self.itl_stat == "max":
            return max(gaps_ms)
        return percentile(gaps_ms, float(self.itl_stat.lstrip("p")))

    def met_by(self, result: RequestResult) -> bool:
        """True when the request succeeded within the TTFT and ITL SLOs."""
        if not result.ok or result.ttft is None:
            return False
        if self.ttft_ms is not None and result.ttft * 1000.0 > self.ttft_ms:
            return False
        itl = self.request_itl_ms(result)
        return not (self.itl_ms is not None and itl is not None and itl > self.itl_ms)


@dataclass
class LevelSummary:
    """What one QPS level measured."""

    qps: float
    wall_s: float
    launched: int
    completed: int
    failed: int
    failures: dict[str, int]
    delayed_launches: int
    launched_qps: float
    request_throughput: float
    output_tokens: int
    output_tokens_per_s: float
    prompt_tokens: int | None
    token_sources: dict[str, int]
    goodput: float
    good_requests: int
    ttft_ms: dict[str, float | None] = field(default_factory=dict)
    itl_ms: dict[str, float | None] = field(default_factory=dict)
    e2e_ms: dict[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)


def summarize_level(
    qps: float,
    results: list[RequestResult],
    wall_s: float,
    launch_window_s: float,
    delayed_launches: int,
    slo: SloSpec,
) -> LevelSummary:
    """Aggregate one level's results; rates are per second of the level's wall time."""
    ok = [r for r in results if r.ok]
    wall = max(wall_s, 1e-9)
    output_tokens = sum(r.output_tokens for r in ok)
    prompt_counts = [r.usage_prompt_tokens for r in ok if r.usage_prompt_tokens is not None]
    good = sum(1 for r in ok if slo.met_by(r))
    return LevelSummary(
        qps=qps,
        wall_s=wall_s,
        launched=len(results),
        completed=len(ok),
        failed=len(results) - len(ok),
        failures=dict(Counter(r.reason for r in results if not r.ok).most_common()),
        delayed_launches=delayed_launches,
        launched_qps=len(results) / launch_window_s if launch_window_s > 0 else 0.0,
        request_throughput=len(ok) / wall,
        output_tokens=output_tokens,
        output_tokens_per_s=output_tokens / wall,
        prompt_tokens=sum(prompt_counts) if prompt_counts else None,
        token_sources=dict(Counter(r.token_source for r in ok)),
        goodput=good / wall,
        good_requests=good,
        ttft_ms=distribution_ms([r.ttft for r in ok if r.ttft is not None]),
        itl_ms=distribution_ms([gap for r in ok for gap in r.gaps]),
        e2e_ms=distribution_ms([r.e2e for r in ok if r.e2e is not None]),
    )
