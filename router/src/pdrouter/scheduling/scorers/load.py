"""Load scorers: minus a count, so their weight is in queued-request units; and KV headroom."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pdrouter.scheduling.request import RequestFeatures
from pdrouter.scheduling.view import EngineView, decode_load, kv_usage, queue, running, waiting


class Fewer:
    """Fewer of `count` is better: the score is minus it."""

    def __init__(self, name: str, count: Callable[[EngineView], float]) -> None:
        self.name = name
        self._count = count

    def score(self, candidates: Sequence[EngineView], request: RequestFeatures) -> list[float]:
        count = self._count
        return [-count(c) for c in candidates]


def queue_scorer() -> Fewer:
    """Queued requests: router in-flight (all workers) + engine waiting."""
    return Fewer("queue", queue)


def running_scorer() -> Fewer:
    return Fewer("running", running)


def waiting_scorer() -> Fewer:
    return Fewer("waiting", waiting)


def decode_load_scorer() -> Fewer:
    """A decoder is busy when many requests run on it or are on their way."""
    return Fewer("decode_load", decode_load)


class KvHeadroom:
    """Free share of the engine's KV cache (0..1): room for this request's blocks."""

    name = "kv_headroom"

    def score(self, candidates: Sequence[EngineView], request: RequestFeatures) -> list[float]:
        return [1.0 - kv_usage(c) for c in candidates]
