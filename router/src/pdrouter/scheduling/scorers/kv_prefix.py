"""Prefix affinity from what the engines report: the share of the prompt's KV blocks each
engine holds, per the KV-event index (engines' BlockStored/BlockRemoved/AllBlocksCleared); and
the balance of what they hold, which keeps prefix affinity from herding."""

from __future__ import annotations

from collections.abc import Sequence

from pdrouter.kvcache.index import KvBlockIndex
from pdrouter.scheduling.request import RequestFeatures
from pdrouter.scheduling.view import EngineView


def cached_blocks(
    index: KvBlockIndex, candidates: Sequence[EngineView], request: RequestFeatures
) -> list[int]:
    """Leading blocks of the prompt each candidate holds (0 for a prompt not tokenized)."""
    if not request.block_hashes:
        return [0] * len(candidates)
    held = index.match(request.block_hashes, [c.id for c in candidates])
    return [held[c.id] for c in candidates]


class KvPrefix:
    """Share (0..1) of the prompt's full blocks the engine already holds. With weight W a
    fully cached prompt is worth W queued requests against the load scorers."""

    name = "kv_prefix"

    def __init__(self, index: KvBlockIndex) -> None:
        self.index = index

    def score(self, candidates: Sequence[EngineView], request: RequestFeatures) -> list[float]:
        total = request.prompt_blocks
        if not total or not request.block_hashes:
            return [0.0] * len(candidates)
        return [n / total for n in cached_blocks(self.index, candidates, request)]


class KvBalance:
    """Minus the engine's share of the largest cache among the candidates (-1..0): an engine
    holding far less than the others has room. Without it, prefix affinity herds: the first
    engines to hold a shared system prompt attract every new conversation, while the others
    stay empty and the busy ones evict (measured: benchmarks/kv-routing, scenario evict)."""

    name = "kv_balance"

    def __init__(self, index: KvBlockIndex) -> None:
        self.index = index

    def score(self, candidates: Sequence[EngineView], request: RequestFeatures) -> list[float]:
        held = [self.index.blocks(c.id) for c in candidates]
        most = max(held, default=0)
        if not most:
            return [0.0] * len(candidates)
        return [-h / most for h in held]
