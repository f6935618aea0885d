"""Parse the load signals the router needs out of a vLLM `/metrics` page."""

from __future__ import annotations

from dataclasses import dataclass

# Current vLLM names first; the second name is what vLLM < 0.12 exported for the same signal.
_RUNNING = ("vllm:num_requests_running",)
_WAITING = ("vllm:num_requests_waiting",)
_KV_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
_PREFIX_QUERIES = ("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total")
_PREFIX_HITS = ("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total")
_WANTED = frozenset(_RUNNING + _WAITING + _KV_USAGE + _PREFIX_QUERIES + _PREFIX_HITS)


@dataclass(frozen=True, slots=True)
class EngineMetrics:
    """One scrape's load figures for an engine, summed over its `engine` (DP rank) label."""

    running: float = 0.0
    waiting: float = 0.0
    kv_cache_usage: float = 0.0
    prefix_cache_queries: float = 0.0
    prefix_cache_hits: float = 0.0

    @property
    def prefix_cache_hit_rate(self) -> float:
        if self.prefix_cache_queries <= 0:
            return 0.0
        return self.prefix_cache_hits / self.prefix_cache_queries


def _sample(line: str) -> tuple[str, float] | None:
    # "name{labels} value [timestamp]"; label values may contain spaces, so split after '}'.
    if "}" in line:
        head, _, rest = line.rpartition("}")
        name = head.partition("{")[0]
    else:
        name, _, rest = line.partition(" ")
    parts = rest.split()
    if not parts:
        return None
    try:
        return name.strip(), float(parts[0])
    except ValueError:
        return None


def parse_engine_metrics(text: str) -> EngineMetrics:
    """Sum the wanted samples per metric name; use the old name only if the new one is absent."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line.startswith("vllm:"):
            continue
        sample = _sample(line)
        if sample is None or sample[0] not in _WANTED:
            continue
        name, value = sample
        sums[name] = sums.get(name, 0.0) + value
        counts[name] = counts.get(name, 0) + 1

    def pick(names: tuple[str, ...], average: bool = False) -> float:
        for name in names:
            if name in sums:
                return sums[name] / counts[name] if average else sums[name]
        return 0.0

    return EngineMetrics(
        running=pick(_RUNNING),
        waiting=pick(_WAITING),
        # A fraction per DP rank: the engine-wide figure is the mean, not the sum.
        kv_cache_usage=pick(_KV_USAGE, average=True),
        prefix_cache_queries=pick(_PREFIX_QUERIES),
        prefix_cache_hits=pick(_PREFIX_HITS),
    )
