"""Routing logics for aggregated serving: pick one engine among candidates. No I/O."""

from __future__ import annotations

import bisect
import itertools
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Protocol

from pdrouter.scheduling.hashing import chunk_hashes, stable_hash
from pdrouter.scheduling.request import RequestFeatures
from pdrouter.stats.engine_state import EngineState


class RoutingLogic(Protocol):
    """Chooses an engine from non-empty, already-filtered candidates."""

    def pick(self, candidates: Sequence[EngineState], request: RequestFeatures) -> EngineState: ...


_turns = itertools.count()


def next_turn() -> int:
    """A rotating tie-breaker: among equally good engines, successive picks take turns, so a
    lightly loaded fleet still spreads (a fixed id order would send everything to one engine)."""
    return next(_turns)


def pick_min(
    candidates: Sequence[EngineState],
    score: Callable[[EngineState], tuple[float, ...]],
    turn: int,
) -> EngineState:
    """The best-scoring candidate; ties are broken by `turn` over a stable (id) order."""
    if len(candidates) == 1:
        return candidates[0]
    scored = [(score(s), s) for s in candidates]  # each score once: it reads several properties
    best = min(key for key, _ in scored)
    tied = [s for key, s in scored if key == best]
    if len(tied) > 1:
        tied.sort(key=_engine_id)
    return tied[turn % len(tied)]


def _engine_id(state: EngineState) -> str:
    return state.id


def _queue(s: EngineState) -> tuple[float, ...]:
    return (s.load, s.metrics.running)


def least_loaded(candidates: Sequence[EngineState], turn: int | None = None) -> EngineState:
    """Lowest in-flight + scraped queue, then fewest running; ties take turns."""
    return pick_min(candidates, _queue, next_turn() if turn is None else turn)


class RoundRobin:
    """Cycles through candidates in a stable order."""

    def __init__(self) -> None:
        self._counter = 0

    def pick(self, candidates: Sequence[EngineState], request: RequestFeatures) -> EngineState:
        self._counter += 1
        return candidates[self._counter % len(candidates)]


class LeastLoaded:
    """Sends each request to the engine with the shortest queue."""

    def pick(self, candidates: Sequence[EngineState], request: RequestFeatures) -> EngineState:
        return least_loaded(candidates)


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


class SessionAffinity:
    """Same session key -> same engine while it stays a candidate; no key -> least loaded."""

    def __init__(self) -> None:
        self._rings: dict[tuple[str, ...], HashRing] = {}

    def ring(self, candidates: Sequence[EngineState]) -> HashRing:
        ids = tuple(sorted(s.id for s in candidates))
        ring = self._rings.get(ids)
        if ring is None:
            if len(self._rings) > 64:  # membership churn: forget old layouts
                self._rings.clear()
            ring = self._rings[ids] = HashRing(ids)
        return ring

    def pick(self, candidates: Sequence[EngineState], request: RequestFeatures) -> EngineState:
        if not request.session:
            return least_loaded(candidates)
        chosen = self.ring(candidates).lookup(request.session)
        return next(s for s in candidates if s.id == chosen)


class PrefixAffinity:
    """Remembers which engine served each prompt-prefix chunk (bounded LRU) and sends a prompt
    to the engine holding its longest known prefix, unless that engine is much busier."""

    def __init__(self, chunk_chars: int = 128, max_entries: int = 100_000, slack: int = 8) -> None:
        self.chunk_chars = chunk_chars
        self.max_entries = max_entries
        self.slack = slack  # extra queued requests we accept for a cache hit
        self._owner: OrderedDict[int, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._owner)

    def match(self, candidates: Sequence[EngineState], hashes: list[int]) -> EngineState | None:
        """The candidate owning the longest matching prefix, if any."""
        by_id = {s.id: s for s in candidates}
        for h in reversed(hashes):
            owner = self._owner.get(h)
            if owner is not None and owner in by_id:
                return by_id[owner]
        return None

    def remember(self, engine_id: str, hashes: list[int]) -> None:
        owner = self._owner
        for h in hashes:
            owner[h] = engine_id
            owner.move_to_end(h)
        while len(owner) > self.max_entries:
            owner.popitem(last=False)

    def pick(self, candidates: Sequence[EngineState], request: RequestFeatures) -> EngineState:
        hashes = chunk_hashes(request.prompt, self.chunk_chars)
        best = least_loaded(candidates)
        hit = self.match(candidates, hashes)
        chosen = hit if hit is not None and hit.load <= best.load + self.slack else best
        self.remember(chosen.id, hashes)
        return chosen
