"""Aggregated routing logics by their legacy names: each is a built-in scheduling profile
(profiles.py), so `pick(candidates, request)` runs filters -> scorers -> picker."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from pdrouter.scheduling.framework import Profile
from pdrouter.scheduling.profiles import (
    PREFIX_SLACK,
    ScorerContext,
    build_profile,
    builtin_profiles,
    prefix_aware_spec,
)
from pdrouter.scheduling.request import RequestFeatures
from pdrouter.scheduling.scorers.prefix import PrefixMemory
from pdrouter.scheduling.scorers.session import HashRing
from pdrouter.stats.engine_state import EngineState

__all__ = [
    "HashRing",
    "LeastLoaded",
    "PrefixAffinity",
    "RoundRobin",
    "RoutingLogic",
    "SessionAffinity",
]


class RoutingLogic(Protocol):
    """Chooses an engine from non-empty, already-filtered candidates."""

    name: str  # the profile's name (for traces)

    def pick(self, candidates: Sequence[EngineState], request: RequestFeatures) -> EngineState: ...


def _aggregated(name: str, ctx: ScorerContext | None = None) -> Profile:
    ctx = ctx or ScorerContext()
    return build_profile(name, builtin_profiles(ctx.kv_prefix_weight)["both"][name], ctx)


class _Builtin(Profile):
    def __init__(self, built: Profile) -> None:
        super().__init__(built.name, built.picker, built.filters, built.scorers)


class RoundRobin(_Builtin):
    """Cycles through candidates in a stable order."""

    def __init__(self) -> None:
        super().__init__(_aggregated("roundrobin"))


class LeastLoaded(_Builtin):
    """The shortest queue, then the fewest running; ties take turns."""

    def __init__(self) -> None:
        super().__init__(_aggregated("least_loaded"))


class SessionAffinity(_Builtin):
    """Same session key -> same engine while it stays a candidate; no key -> least loaded."""

    def __init__(self) -> None:
        super().__init__(_aggregated("session"))


class PrefixAffinity(_Builtin):
    """Sends a prompt to the engine this router sent its longest known prefix to (bounded
    memory), unless that engine is more than `slack` requests busier."""

    def __init__(
        self, chunk_chars: int = 128, max_entries: int = 100_000, slack: float = PREFIX_SLACK
    ) -> None:
        self.memory = PrefixMemory(chunk_chars, max_entries)
        ctx = ScorerContext(prefix_memory=self.memory)
        super().__init__(build_profile("prefix_aware", prefix_aware_spec(slack), ctx))

    def __len__(self) -> int:
        return len(self.memory)
