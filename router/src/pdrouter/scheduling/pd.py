"""Prefill/decode decisions: whether to disaggregate, and which prefill and decode engines.

The PD profile handler: candidates by role, the decode profile, the PD decider, then the
prefill profile. Pure: no I/O, unit-tested without sockets.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence, Set
from dataclasses import dataclass, field

from pdrouter.config import PdFallback, RouterSettings
from pdrouter.discovery.endpoint import Role
from pdrouter.kvcache.index import KvBlockIndex
from pdrouter.scheduling.decider import PdDecider, PromptLength, UncachedTokens
from pdrouter.scheduling.framework import Profile
from pdrouter.scheduling.logic import PrefixAffinity, SessionAffinity
from pdrouter.scheduling.profiles import (
    ScorerContext,
    build_profile,
    builtin_profiles,
    profile_for,
    scorer_context,
)
from pdrouter.scheduling.request import RequestFeatures
from pdrouter.stats.engine_state import EngineState


class PdDecision(enum.StrEnum):
    DISAGGREGATED = "disaggregated"  # prefill on a prefill engine, decode on a decode engine
    DIRECT = "direct"  # short or cached prompt: one engine does both (conditional disaggregation)
    FALLBACK = "fallback"  # no prefill engine available; configured to run aggregated
    RECOMPUTE = "recompute"  # prefill gave no KV params; decode recomputes the prompt


@dataclass(frozen=True, slots=True)
class PrefillDecodePlan:
    """The decision for one request: which engines run which phase."""

    decision: PdDecision
    decode: EngineState
    prefill: EngineState | None = None
    # Why these engines (for traces): the decider's reason to go direct (short_prompt,
    # cached_prompt), no_prefill_engine, or the profiles that chose (prefill/decode name).
    reason: str = ""


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


def _legacy_prefill(prefix: PrefixAffinity | None) -> Profile:
    """Least queued, then (with a prefix memory) the engine that got the prompt's prefix."""
    spec = builtin_profiles(0.0)["prefill"]["least_queue"]
    if prefix is None:
        spec = spec.model_copy(
            update={"scorers": [s for s in spec.scorers if s.name != "prefix_memory"]}
        )
    ctx = ScorerContext(prefix_memory=prefix.memory if prefix is not None else None)
    return build_profile("least_queue", spec, ctx)


def _builtin(role: str, name: str) -> Profile:
    return build_profile(name, builtin_profiles(0.0)[role][name], ScorerContext())


@dataclass
class PdScheduler:
    """Builds a PrefillDecodePlan from the engines of one model.

    `prefill` / `decode` are the role profiles (default: least queued with `prefix`'s memory,
    and least loaded); with `sessions`, requests carrying a session key use session profiles
    that pin the key to one (prefill, decode) pair. `decider` says when to skip prefill
    (default: prompts under `min_prompt_tokens`).
    """

    min_prompt_tokens: int = 0
    fallback_aggregated: bool = False
    prefix: PrefixAffinity | None = None
    sessions: SessionAffinity | None = None
    prefill: Profile | None = None
    decode: Profile | None = None
    decider: PdDecider | None = None
    # The transport's prefill engines take only its prefill leg (see KvTransport).
    exclusive_prefill: bool = False
    _session_profiles: tuple[Profile, Profile] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.prefill is None:
            self.prefill = _legacy_prefill(self.prefix)
        if self.decode is None:
            self.decode = _builtin("decode", "least_loaded")
        if self.decider is None:
            self.decider = PromptLength(self.min_prompt_tokens)
        if self.sessions is not None:
            self._session_profiles = (
                _builtin("prefill", "session"),
                _builtin("decode", "session"),
            )

    def _profiles(self, request: RequestFeatures) -> tuple[Profile, Profile]:
        if self._session_profiles is not None and request.session:
            return self._session_profiles
        assert self.prefill is not None and self.decode is not None
        return self.prefill, self.decode

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
        prefill_profile, decode_profile = self._profiles(request)
        decode = decode_profile.pick(decoders, request)
        assert self.decider is not None
        if not self.decider.disaggregate(request, decode):
            return PrefillDecodePlan(PdDecision.DIRECT, decode, reason=self.decider.reason)

        pool = prefill_pool(prefillers)
        if not pool:
            if self.fallback_aggregated:
                return PrefillDecodePlan(PdDecision.FALLBACK, decode, reason="no_prefill_engine")
            raise PdUnavailable("prefill", f"no healthy prefill engine for model {request.model!r}")
        prefill = prefill_profile.pick(pool, request)
        if decode.id == prefill.id:  # a `both` engine prefills: decode elsewhere if possible
            others = [s for s in decoders if s.id != prefill.id]
            if others:
                decode = decode_profile.pick(others, request)
        reason = f"{prefill_profile.name}/{decode_profile.name}"
        return PrefillDecodePlan(PdDecision.DISAGGREGATED, decode, prefill, reason)

    def pick_prefill(
        self, candidates: Sequence[EngineState], request: RequestFeatures
    ) -> EngineState:
        """A prefill engine among `candidates` (from `prefill_candidates`, e.g. for a retry),
        dedicated ones first."""
        assert self.prefill is not None
        return self.prefill.pick(prefill_pool(candidates), request)

    def pick_decode(
        self, candidates: Sequence[EngineState], request: RequestFeatures
    ) -> EngineState:
        """A decode engine among `candidates` (fresh load figures after a prefill, a retry)."""
        assert self.decode is not None
        return self.decode.pick(candidates, request)


def prefill_pool(prefillers: Sequence[EngineState]) -> Sequence[EngineState]:
    """Of the prefill candidates, `both` engines only when there is no dedicated one."""
    dedicated = [s for s in prefillers if not s.endpoint.role.can_decode]
    return dedicated or prefillers


def build_pd_scheduler(
    settings: RouterSettings, index: KvBlockIndex | None, exclusive_prefill: bool = False
) -> PdScheduler:
    """The PD scheduler the settings describe: role profiles, sessions, decider, fallback;
    `exclusive_prefill` is the transport's (its prefill engines take only prefill legs)."""
    prefix = PrefixAffinity(settings.prefix_chunk_chars, settings.prefix_max_entries)
    ctx = scorer_context(settings, index, prefix.memory)
    custom = settings.scheduling_profiles
    decider: PdDecider
    if settings.pd_min_uncached_tokens:
        assert index is not None  # settings require --kv-events
        decider = UncachedTokens(index, settings.pd_min_uncached_tokens)
    else:
        decider = PromptLength(settings.pd_min_prompt_tokens)
    return PdScheduler(
        fallback_aggregated=settings.pd_fallback is PdFallback.AGGREGATED,
        prefix=prefix,
        sessions=SessionAffinity() if settings.pd_session_affinity else None,
        prefill=profile_for("prefill", settings.prefill_profile or "least_queue", custom, ctx),
        decode=profile_for("decode", settings.decode_profile or "least_loaded", custom, ctx),
        decider=decider,
        exclusive_prefill=exclusive_prefill,
    )
