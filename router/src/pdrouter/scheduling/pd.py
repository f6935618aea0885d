"""Prefill/decode decisions: whether to disaggregate, and which prefill and decode engines.

Pure functions over the pool's states: no I/O, unit-tested without sockets.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Sequence, Set
from dataclasses import dataclass

from pdrouter.discovery.endpoint import Role
from pdrouter.scheduling.hashing import chunk_hashes
from pdrouter.scheduling.logic import PrefixAffinity, SessionAffinity, pick_min
from pdrouter.scheduling.request import RequestFeatures
from pdrouter.stats.engine_state import EngineState


class PdDecision(enum.StrEnum):
    DISAGGREGATED = "disaggregated"  # prefill on a prefill engine, decode on a decode engine
    DIRECT = "direct"  # short prompt: one engine does both (conditional disaggregation)
    FALLBACK = "fallback"  # no prefill engine available; configured to run aggregated
    RECOMPUTE = "recompute"  # prefill gave no KV params; decode recomputes the prompt


@dataclass(frozen=True, slots=True)
class PrefillDecodePlan:
    """The decision for one request: which engines run which phase."""

    decision: PdDecision
    decode: EngineState
    prefill: EngineState | None = None
    reason: str = ""  # why these engines (for traces): short_prompt, no_prefill_engine, ...


class PdUnavailable(Exception):
    """No plan is possible; `phase` says which pool is empty (prefill or decode)."""

    def __init__(self, phase: str, message: str) -> None:
        super().__init__(message)
        self.phase = phase


def prefill_candidates(
    engines: Sequence[EngineState], exclusive: bool, exclude: Set[str] = frozenset()
) -> list[EngineState]:
    """Routable engines that may run a prefill leg. An exclusive transport's prefill engines
    are the engines of role prefill only (to it, a "both" engine is a plain engine)."""
    return [
        s
        for s in engines
        if s.routable
        and s.id not in exclude
        and (s.endpoint.role is Role.PREFILL if exclusive else s.endpoint.role.can_prefill)
    ]


def decode_candidates(
    engines: Sequence[EngineState], exclude: Set[str] = frozenset()
) -> list[EngineState]:
    """Routable engines that may be sent a client's request as it is (decode, direct, fallback,
    recompute): never an engine of role prefill."""
    return [s for s in engines if s.endpoint.role.can_decode and s.routable and s.id not in exclude]


# Separate rotations per decision, so one pick's turns never align with another's.
_prefill_turns = itertools.count()
_decode_turns = itertools.count()


def decode_score(state: EngineState) -> tuple[float, ...]:
    """Decode engines are busy when many requests run or their KV cache is full (recent
    failures count as running requests, so a fast-failing engine does not look idle)."""
    m = state.metrics
    return (m.running + state.active, m.kv_cache_usage, m.waiting)


def pick_decode(candidates: Sequence[EngineState], turn: int | None = None) -> EngineState:
    return pick_min(candidates, decode_score, next(_decode_turns) if turn is None else turn)


def _prefill_score(state: EngineState) -> tuple[float, ...]:
    return (state.load, state.metrics.running)


def pick_prefill(
    candidates: Sequence[EngineState],
    request: RequestFeatures,
    prefix: PrefixAffinity | None,
    turn: int | None = None,
) -> EngineState:
    """Least queued prefill engine; among equally queued ones, the one holding the prompt's
    prefix, else they take turns."""
    turn = next(_prefill_turns) if turn is None else turn
    least = min(s.load for s in candidates)
    tied = [s for s in candidates if s.load == least]
    hashes = chunk_hashes(request.prompt, prefix.chunk_chars) if prefix is not None else []
    hit = prefix.match(tied, hashes) if prefix is not None and hashes else None
    chosen = hit if hit is not None else pick_min(tied, _prefill_score, turn)
    if prefix is not None and hashes:
        prefix.remember(chosen.id, hashes)
    return chosen


@dataclass
class PdScheduler:
    """Builds a PrefillDecodePlan from the engines of one model."""

    min_prompt_tokens: int = 0
    fallback_aggregated: bool = False
    prefix: PrefixAffinity | None = None
    sessions: SessionAffinity | None = None
    # The transport's prefill engines take only its prefill leg (see KvTransport).
    exclusive_prefill: bool = False

    def plan(
        self,
        engines: Sequence[EngineState],
        request: RequestFeatures,
        exclude: frozenset[str] = frozenset(),
    ) -> PrefillDecodePlan:
        prefillers = prefill_candidates(engines, self.exclusive_prefill, exclude)
        decoders = decode_candidates(engines, exclude)
        if not decoders:
            raise PdUnavailable("decode", f"no healthy decode engine for model {request.model!r}")

        if self.min_prompt_tokens and request.estimated_tokens < self.min_prompt_tokens:
            return PrefillDecodePlan(
                PdDecision.DIRECT, self._decode(decoders, request), reason="short_prompt"
            )

        # A 'both' engine may prefill, but dedicated prefill engines come first.
        dedicated = [s for s in prefillers if not s.endpoint.role.can_decode]
        pool = dedicated or prefillers
        if not pool:
            if self.fallback_aggregated:
                return PrefillDecodePlan(
                    PdDecision.FALLBACK, self._decode(decoders, request), reason="no_prefill_engine"
                )
            raise PdUnavailable("prefill", f"no healthy prefill engine for model {request.model!r}")
        if self.sessions is not None and request.session:
            prefill, reason = self.sessions.pick(pool, request), "session_affinity"
        else:
            prefill, reason = pick_prefill(pool, request, self.prefix), "least_loaded"
        decode_pool = [s for s in decoders if s.id != prefill.id] or decoders
        return PrefillDecodePlan(
            PdDecision.DISAGGREGATED, self._decode(decode_pool, request), prefill, reason
        )

    def _decode(self, decoders: Sequence[EngineState], request: RequestFeatures) -> EngineState:
        if self.sessions is not None and request.session:
            return self.sessions.pick(decoders, request)
        return pick_decode(decoders)
