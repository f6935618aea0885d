"""Session affinity: the same session key goes to the same engine while it is a candidate."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from pdrouter.scheduling.hashing import stable_hash
from pdrouter.scheduling.request import RequestFeatures
from pdrouter.scheduling.view import EngineView


class HashRing:
    """Consistent hashing with virtual nodes: a member leaving moves only its own keys."""

    def __init__(self, members: Sequence[str], vnodes: int = 160) -> None:
        points = sorted(
            (stable_hash(f"{member}#{i}"), member) for member in members for i in range(vnodes)
        )
        self._keys = [p for p, _ in points]
        self._members = [m for _, m in points]

    def lookup(self, key: str) -> str:
        idx = bisect.bisect(self._keys, stable_hash(key)) % len(self._keys)
        return self._members[idx]


class SessionRing:
    """1 for the engine the session key hashes to among the candidates, else 0; all 0 when
    the request has no session key (later tiers decide)."""

    name = "session"

    def __init__(self) -> None:
        self._rings: dict[tuple[str, ...], HashRing] = {}

    def ring(self, candidates: Sequence[EngineView]) -> HashRing:
        ids = tuple(sorted(c.id for c in candidates))
        ring = self._rings.get(ids)
        if ring is None:
            if len(self._rings) > 64:  # membership churn: forget old layouts
                self._rings.clear()
            ring = self._rings[ids] = HashRing(ids)
        return ring

    def score(self, candidates: Sequence[EngineView], request: RequestFeatures) -> list[float]:
        if not request.session:
            return [0.0] * len(candidates)
        owner = self.ring(candidates).lookup(request.session)
        return [1.0 if c.id == owner else 0.0 for c in candidates]
