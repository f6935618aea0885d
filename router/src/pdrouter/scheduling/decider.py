"""The PD decider: run a prompt's prefill on a prefill engine, or directly on the decoder?

Disaggregation pays a KV transfer and a second engine call; for a short prompt, or one the
decoder already mostly holds, running it on the decoder is cheaper (conditional
disaggregation). Deciders see the decoder the decode profile chose.
"""

from __future__ import annotations

from typing import Protocol

from pdrouter.kvcache.index import KvBlockIndex
from pdrouter.scheduling.request import RequestFeatures
from pdrouter.scheduling.view import EngineView


class PdDecider(Protocol):
    reason: str  # why a request it keeps off prefill engines runs direct (for traces)

    def disaggregate(self, request: RequestFeatures, decode: EngineView) -> bool: ...


class PromptLength:
    """Prompts shorter than `min_tokens` (exact when tokenized, else estimated from
    characters) run on the decoder; 0 always disaggregates."""

    reason = "short_prompt"

    def __init__(self, min_tokens: int = 0) -> None:
        self.min_tokens = min_tokens

    def disaggregate(self, request: RequestFeatures, decode: EngineView) -> bool:
        return not (self.min_tokens and request.estimated_tokens < self.min_tokens)


class UncachedTokens:
    """Prompts whose part the chosen decoder does not hold (per the KV-event index) is
    shorter than `min_tokens` run on the decoder."""

    reason = "cached_prompt"

    def __init__(self, index: KvBlockIndex, min_tokens: int) -> None:
        self.index = index
        self.min_tokens = min_tokens

    def uncached(self, request: RequestFeatures, engine_id: str) -> int:
        held = 0
        if request.block_hashes:
            held = self.index.match(request.block_hashes, (engine_id,))[engine_id]
        return max(request.estimated_tokens - held * request.block_size, 0)

    def disaggregate(self, request: RequestFeatures, decode: EngineView) -> bool:
        return self.uncached(request, decode.id) >= self.min_tokens
