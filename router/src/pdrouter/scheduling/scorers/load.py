"""Load scorers: minus a count, so their weight is in queued-request units."""

from __future__ import annotations

from collections.abc import Sequence

from pdrouter.scheduling.request import RequestFeatures
from pdrouter.scheduling.view import EngineView, decode_load, kv_usage, queue, running, waiting


class Queue:
    """Fewer queued requests is better (router in-flight + engine waiting)."""

    name = "queue"

    def score(self, candidates: Sequence[EngineView], request: RequestFeatures) -> list[float]:
        return [-queue(c) for c in candidates]


class Running:
    """Fewer running requests is better."""

    name = "running"

    def score(self, candidates: Sequence[EngineView], request: RequestFeatures) -> list[float]:
        return [-running(c) for c in candidates]


class Waiting:
    name = "waiting"

    def score(self, candidates: Sequence[EngineView], request: RequestFeatures) -> list[float]:
        return [-waiting(c) for c in candidates]


class DecodeLoad:
    """A decoder is busy when many requests run on it or are on their way."""

    name = "decode_load"

    def score(self, candidates: Sequence[EngineView], request: RequestFeatures) -> list[float]:
        return [-decode_load(c) for c in candidates]


class KvHeadroom:
    """Free share of the engine's KV cache (0..1): room for this request's blocks."""

    name = "kv_headroom"

    def score(self, candidates: Sequence[EngineView], request: RequestFeatures) -> list[float]:
        return [1.0 - kv_usage(c) for c in candidates]
