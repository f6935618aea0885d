"""Prefix affinity guessed from prompt characters: which engine this router last sent each
prompt-prefix chunk to (bounded LRU). A guess: it knows nothing of evictions, restarts, other
routers or other workers; the KV-event scorer (kv_prefix.py) reads what engines report."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from pdrouter.scheduling.hashing import chunk_hashes
from pdrouter.scheduling.request import RequestFeatures
from pdrouter.scheduling.view import EngineView


class PrefixMemory:
    """1 for the candidate that got the longest remembered prefix of this prompt, else 0.
    Learns the choice after each pick."""

    name = "prefix_memory"

    def __init__(self, chunk_chars: int = 128, max_entries: int = 100_000) -> None:
        self.chunk_chars = chunk_chars
        self.max_entries = max_entries
        self._owner: OrderedDict[int, str] = OrderedDict()
        # The last request's chunk hashes: score() and on_pick() of one pick share them.
        self._last: tuple[RequestFeatures | None, list[int]] = (None, [])

    def __len__(self) -> int:
        return len(self._owner)

    def hashes(self, request: RequestFeatures) -> list[int]:
        last, hashes = self._last
        if last is not request:
            hashes = chunk_hashes(request.prompt, self.chunk_chars)
            self._last = (request, hashes)
        return hashes

    def owner(self, candidates: Sequence[EngineView], hashes: list[int]) -> str | None:
        """Id of the candidate owning the longest remembered prefix, if any."""
        ids = {c.id for c in candidates}
        for h in reversed(hashes):
            owner = self._owner.get(h)
            if owner is not None and owner in ids:
                return owner
        return None

    def remember(self, engine_id: str, hashes: list[int]) -> None:
        owner = self._owner
        for h in hashes:
            owner[h] = engine_id
            owner.move_to_end(h)
        while len(owner) > self.max_entries:
            owner.popitem(last=False)

    def score(self, candidates: Sequence[EngineView], request: RequestFeatures) -> list[float]:
        hashes = self.hashes(request)
        owner = self.owner(candidates, hashes) if hashes else None
        return [1.0 if c.id == owner else 0.0 for c in candidates]

    def on_pick(self, chosen: EngineView, request: RequestFeatures) -> None:
        hashes = self.hashes(request)
        if hashes:
            self.remember(chosen.id, hashes)
