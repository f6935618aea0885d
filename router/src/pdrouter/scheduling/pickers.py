"""Pickers: turn the candidates' score keys into one choice."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

from pdrouter.scheduling.framework import E, Picker


class MaxScore:
    """The best key wins; equally good engines take turns over a stable (id) order, so a
    lightly loaded fleet still spreads (a fixed order would send everything to one engine)."""

    name = "max_score"

    def __init__(self) -> None:
        self._turns = itertools.count()

    def choose(self, candidates: Sequence[E], keys: Sequence[tuple[float, ...]]) -> E:
        turn = next(self._turns)
        best = max(keys)
        tied = [c for c, k in zip(candidates, keys, strict=True) if k == best]
        if len(tied) == 1:
            return tied[0]
        tied.sort(key=lambda c: c.id)
        return tied[turn % len(tied)]


class RoundRobin:
    """Cycles through the candidates in the order given; scores are ignored."""

    name = "round_robin"

    def __init__(self) -> None:
        self._counter = 0

    def choose(self, candidates: Sequence[E], keys: Sequence[tuple[float, ...]]) -> E:
        self._counter += 1
        return candidates[self._counter % len(candidates)]


PICKERS: dict[str, Callable[[], Picker]] = {"max_score": MaxScore, "round_robin": RoundRobin}
