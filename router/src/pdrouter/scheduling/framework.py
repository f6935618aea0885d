"""The scheduling pipeline: filters -> weighted scorers -> picker, composed into a Profile.

A filter narrows the candidates; a scorer rates each remaining candidate (higher is better);
the profile adds the weighted scores of each tier and the picker takes the best key. Tier 0
decides; a later tier only orders candidates that tie on every earlier one (how the built-in
policies keep their exact lexicographic rules, e.g. "least queued, then fewest running").

Units: the load scorers return minus a count of requests, so a weight on another scorer reads
as "worth this many queued requests" (a fully cached prompt with weight 8 outweighs 8 queued
requests). All of it is pure: no I/O, no clock, no event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

from pdrouter.scheduling.request import RequestFeatures
from pdrouter.scheduling.view import EngineView

E = TypeVar("E", bound=EngineView)


class NoCandidate(LookupError):
    """The profile's filters left no engine to choose from."""


class Filter(Protocol):
    """Keeps the candidates a rule allows (may return all or none of them)."""

    name: str

    def apply(self, candidates: Sequence[E], request: RequestFeatures) -> Sequence[E]: ...


class Scorer(Protocol):
    """Rates every candidate; the list is parallel to `candidates`, higher is better."""

    name: str

    def score(self, candidates: Sequence[EngineView], request: RequestFeatures) -> list[float]: ...


@runtime_checkable
class PickObserver(Protocol):
    """A stateful scorer that learns from the choice (e.g. remembers who got a prefix)."""

    def on_pick(self, chosen: EngineView, request: RequestFeatures) -> None: ...


class Picker(Protocol):
    """Chooses one candidate given each candidate's key (tuple of tier scores)."""

    name: str

    def choose(self, candidates: Sequence[E], keys: Sequence[tuple[float, ...]]) -> E: ...


@dataclass(frozen=True, slots=True)
class WeightedScorer:
    scorer: Scorer
    weight: float = 1.0
    tier: int = 0


class Profile:
    """One policy: the engine a request goes to in one role (prefill, decode or both)."""

    def __init__(
        self,
        name: str,
        picker: Picker,
        filters: Sequence[Filter] = (),
        scorers: Sequence[WeightedScorer] = (),
    ) -> None:
        self.name = name
        self.filters = tuple(filters)
        self.scorers = tuple(scorers)
        self.picker = picker
        depth = 1 + max((w.tier for w in self.scorers), default=-1)
        self._tiers = tuple(
            tuple((w.scorer, w.weight) for w in self.scorers if w.tier == t) for t in range(depth)
        )
        self._observers = tuple(
            w.scorer for w in self.scorers if isinstance(w.scorer, PickObserver)
        )

    def keys(
        self, candidates: Sequence[EngineView], request: RequestFeatures
    ) -> list[tuple[float, ...]]:
        """Each candidate's key: one weighted sum per tier."""
        n = len(candidates)
        columns: list[list[float]] = []
        for tier in self._tiers:
            total = [0.0] * n
            for scorer, weight in tier:
                for i, value in enumerate(scorer.score(candidates, request)):
                    total[i] += weight * value
            columns.append(total)
        return list(zip(*columns, strict=True)) if columns else [()] * n

    def pick(self, candidates: Sequence[E], request: RequestFeatures) -> E:
        """Filter, score, choose; raises NoCandidate if the filters leave nothing."""
        for f in self.filters:
            candidates = f.apply(candidates, request)
        if not candidates:
            raise NoCandidate(f"profile {self.name!r}: no candidate left")
        if len(candidates) == 1:
            chosen = candidates[0]  # nothing to weigh
        else:
            chosen = self.picker.choose(candidates, self.keys(candidates, request))
        for observer in self._observers:
            observer.on_pick(chosen, request)
        return chosen

    def uses(self, scorer_type: type) -> bool:
        return any(isinstance(w.scorer, scorer_type) for w in self.scorers)

    def __repr__(self) -> str:
        parts = [f.name for f in self.filters]
        parts += [f"{w.scorer.name}*{w.weight:g}@{w.tier}" for w in self.scorers]
        return f"Profile({self.name}: {' -> '.join(parts)} -> {self.picker.name})"
