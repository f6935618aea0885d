"""Filters: which candidates a profile considers at all."""

from __future__ import annotations

from collections.abc import Sequence

from pdrouter.scheduling.framework import E
from pdrouter.scheduling.request import RequestFeatures
from pdrouter.scheduling.view import queue


class LeastQueue:
    """Only the engines with the shortest queue (later scorers choose among them)."""

    name = "least_queue"

    def apply(self, candidates: Sequence[E], request: RequestFeatures) -> Sequence[E]:
        if not candidates:
            return candidates
        least = min(queue(c) for c in candidates)
        return [c for c in candidates if queue(c) == least]


FILTERS = {f.name: f for f in (LeastQueue,)}
