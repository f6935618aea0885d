"""Prometheus metrics of the KV-event index: its size, the event streams, and how well its
predictions match what engines then report (`pdstack_router_kv_*`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pdrouter.kvcache.index import KvBlockIndex
from pdrouter.kvcache.subscriber import StreamStats
from pdrouter.stats.router_metrics import Counter, Histogram

_TOKEN_BUCKETS = (0, 16, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
_FAST = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)


class KvRequestMetrics:
    """Per-request figures, updated on the request path (summed over workers)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.tokenize = Histogram(
            "pdstack_router_kv_tokenize_seconds",
            "Duration of the engine /tokenize call that gives a prompt's token ids",
            buckets=_FAST,
            registry=r,
        )
        self.tokenize_failures = Counter(
            "pdstack_router_kv_tokenize_failures",
            "Prompts routed without the KV index because tokenizing failed, by reason",
            ["reason"],
            registry=r,
        )
        self.hashing = Histogram(
            "pdstack_router_kv_hash_seconds",
            "Time to hash a prompt's token ids into KV block keys",
            buckets=_FAST,
            registry=r,
        )
        self.predicted = Histogram(
            "pdstack_router_kv_predicted_cached_tokens",
            "Prompt tokens the index said the chosen engine holds, by role",
            ["role"],
            buckets=_TOKEN_BUCKETS,
            registry=r,
        )
        self.reported = Histogram(
            "pdstack_router_kv_reported_cached_tokens",
            "Prompt tokens the engine then reported cached (usage.prompt_tokens_details)",
            ["role"],
            buckets=_TOKEN_BUCKETS,
            registry=r,
        )
        self.prediction = Counter(
            "pdstack_router_kv_predictions",
            "Predicted vs reported cached tokens of a request: exact (within a block), over, under",
            ["role", "result"],
            registry=r,
        )
        self.longest_prefix = Counter(
            "pdstack_router_kv_prefill_longest_prefix",
            "Prefills by whether the chosen engine held the longest cached prefix of the "
            "prompt among the candidates (per the index), for prompts with a cached prefix",
            ["result"],
            registry=r,
        )


class KvIndexCollector(Collector):
    """Index and stream gauges/counters, computed at scrape time."""

    def __init__(
        self,
        index: KvBlockIndex,
        stats: Callable[[], StreamStats],
        engine_name: Callable[[str], str],
    ) -> None:
        self._index = index
        self._stats = stats
        self._name = engine_name

    def collect(self) -> Iterator[Metric]:
        blocks = GaugeMetricFamily(
            "pdstack_router_kv_index_blocks",
            "KV blocks the index says each engine holds",
            labels=["engine"],
        )
        for engine_id in self._index.engines():
            blocks.add_metric([self._name(engine_id)], self._index.blocks(engine_id))
        yield blocks
        yield GaugeMetricFamily(
            "pdstack_router_kv_index_keys",
            "Distinct KV block keys in the index",
            value=len(self._index),
        )
        yield CounterMetricFamily(
            "pdstack_router_kv_index_evicted",
            "Block keys forgotten to stay within --kv-index-max-blocks",
            value=self._index.evicted,
        )
        s = self._stats()
        batches = CounterMetricFamily(
            "pdstack_router_kv_event_batches",
            "KV-event batches: applied live or replayed, lost (entry cleared), undecodable",
            labels=["outcome"],
        )
        batches.add_metric(["applied"], s.batches)
        batches.add_metric(["replayed"], s.replayed)
        batches.add_metric(["lost"], s.lost)
        batches.add_metric(["bad"], s.bad)
        yield batches
        events = CounterMetricFamily(
            "pdstack_router_kv_events",
            "KV events applied to the index, or ignored (other media or cache groups)",
            labels=["outcome"],
        )
        events.add_metric(["applied"], s.events)
        events.add_metric(["ignored"], s.ignored)
        yield events
        resets = CounterMetricFamily(
            "pdstack_router_kv_engine_resets",
            "Engine entries cleared: restarted, disconnected, gap, left",
            labels=["reason"],
        )
        for reason, n in sorted(s.resets.items()):
            resets.add_metric([reason], n)
        yield resets
        checks = CounterMetricFamily(
            "pdstack_router_kv_hash_checks",
            "Engine block hashes checked against the router's own hashing",
            labels=["result"],
        )
        checks.add_metric(["match"], s.hash_checks - s.hash_mismatches)
        checks.add_metric(["mismatch"], s.hash_mismatches)
        yield checks
