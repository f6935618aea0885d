"""Named scheduling profiles per role, built from specs: the built-in policies and the ones a
user defines in `scheduling_profiles`. The one place that maps names to filters, scorers and
pickers, so a new policy is a scorer module plus one line here."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pdrouter.config import ProfileSpec, RouterSettings, ScorerSpec
from pdrouter.kvcache.index import KvBlockIndex
from pdrouter.scheduling.filters import FILTERS
from pdrouter.scheduling.framework import Profile, Scorer, WeightedScorer
from pdrouter.scheduling.pickers import PICKERS
from pdrouter.scheduling.scorers.kv_prefix import KvBalance, KvPrefix
from pdrouter.scheduling.scorers.load import (
    KvHeadroom,
    decode_load_scorer,
    queue_scorer,
    running_scorer,
    waiting_scorer,
)
from pdrouter.scheduling.scorers.prefix import PrefixMemory
from pdrouter.scheduling.scorers.session import SessionRing

# Queued requests a remembered prefix is worth to prefix_aware (and a half, so that "at most
# this many more queued" keeps the owner on a tie of the weighted sum).
PREFIX_SLACK = 8


@dataclass(frozen=True)
class ScorerContext:
    """What scorers may be built with."""

    prefix_chunk_chars: int = 128
    prefix_max_entries: int = 100_000
    kv_index: KvBlockIndex | None = None
    kv_prefix_weight: float = 8.0
    prefix_memory: PrefixMemory | None = None  # share one memory instead of a fresh one


def _needs_index(
    name: str, make: Callable[[KvBlockIndex], Scorer]
) -> Callable[[ScorerContext], Scorer]:
    def build(ctx: ScorerContext) -> Scorer:
        if ctx.kv_index is None:
            raise ValueError(f"scorer {name!r} needs --kv-events")
        return make(ctx.kv_index)

    return build


SCORERS: dict[str, Callable[[ScorerContext], Scorer]] = {
    "queue": lambda ctx: queue_scorer(),
    "running": lambda ctx: running_scorer(),
    "waiting": lambda ctx: waiting_scorer(),
    "decode_load": lambda ctx: decode_load_scorer(),
    "kv_headroom": lambda ctx: KvHeadroom(),
    "session": lambda ctx: SessionRing(),
    "prefix_memory": lambda ctx: (
        ctx.prefix_memory or PrefixMemory(ctx.prefix_chunk_chars, ctx.prefix_max_entries)
    ),
    "kv_prefix": _needs_index("kv_prefix", KvPrefix),
    "kv_balance": _needs_index("kv_balance", KvBalance),
}


def _s(name: str, weight: float = 1.0, tier: int = 0) -> ScorerSpec:
    return ScorerSpec(name=name, weight=weight, tier=tier)


def prefix_aware_spec(slack: float = PREFIX_SLACK) -> ProfileSpec:
    """Least queued, unless the engine this router sent the prompt's prefix to is at most
    `slack` requests busier (the half keeps it on an exact tie of the weighted sum)."""
    return ProfileSpec(
        scorers=[_s("queue"), _s("prefix_memory", slack + 0.5), _s("running", tier=1)]
    )


def builtin_profiles(kv_weight: float) -> dict[str, dict[str, ProfileSpec]]:
    """The built-in profiles of each role; `kv_weight` is --kv-prefix-weight."""
    decode_load = [_s("decode_load"), _s("kv_headroom", tier=1), _s("waiting", tier=2)]
    # A fully cached prompt is worth kv_weight queued requests; the engine holding the most
    # blocks pays half that, so new conversations spread while follow-ups stay.
    kv_scorers = [
        _s("kv_prefix", kv_weight),
        _s("kv_balance", kv_weight / 2),
        _s("queue"),
        _s("running", tier=1),
    ]
    return {
        # Aggregated serving: the names of --routing-logic.
        "both": {
            "roundrobin": ProfileSpec(picker="round_robin"),
            "least_loaded": ProfileSpec(scorers=[_s("queue"), _s("running", tier=1)]),
            "session": ProfileSpec(
                scorers=[_s("session"), _s("queue", tier=1), _s("running", tier=2)]
            ),
            "prefix_aware": prefix_aware_spec(),
            "kv_aware": ProfileSpec(scorers=kv_scorers),
        },
        # PD prefill, among the dedicated prefill engines (`both` ones when there are none).
        "prefill": {
            # Least queued; among those, the one this router last sent the prompt's prefix to.
            "least_queue": ProfileSpec(
                filters=["least_queue"], scorers=[_s("prefix_memory"), _s("running", tier=1)]
            ),
            "kv_prefix": ProfileSpec(scorers=kv_scorers),
            "session": ProfileSpec(
                scorers=[_s("session"), _s("queue", tier=1), _s("running", tier=2)]
            ),
            "roundrobin": ProfileSpec(picker="round_robin"),
        },
        # PD decode: fewest running + in flight, then the most KV headroom, then shortest queue.
        "decode": {
            "least_loaded": ProfileSpec(scorers=decode_load),
            "session": ProfileSpec(
                scorers=[_s("session"), *(_s(w.name, w.weight, w.tier + 1) for w in decode_load)]
            ),
            "roundrobin": ProfileSpec(picker="round_robin"),
        },
    }


def build_profile(name: str, spec: ProfileSpec, ctx: ScorerContext) -> Profile:
    """A profile with fresh stateful scorers (but ctx's shared ones); ValueError names a
    bad part."""
    try:
        filters = [FILTERS[f]() for f in spec.filters]
        picker = PICKERS[spec.picker]()
    except KeyError as exc:
        raise ValueError(f"profile {name!r}: unknown filter or picker {exc.args[0]!r}") from None
    scorers = []
    for s in spec.scorers:
        factory = SCORERS.get(s.name)
        if factory is None:
            known = ", ".join(sorted(SCORERS))
            raise ValueError(f"profile {name!r}: unknown scorer {s.name!r} (known: {known})")
        scorers.append(WeightedScorer(factory(ctx), s.weight, s.tier))
    return Profile(name, picker, filters, scorers)


def profile_for(
    role: str, name: str, custom: Mapping[str, ProfileSpec], ctx: ScorerContext
) -> Profile:
    """The profile called `name` for `role` (both, prefill, decode): a user-defined one first,
    then the role's built-ins."""
    builtin = builtin_profiles(ctx.kv_prefix_weight)[role]
    spec = custom.get(name) or builtin.get(name)
    if spec is None:
        known = ", ".join(sorted({*builtin, *custom}))
        raise ValueError(f"unknown {role} scheduling profile {name!r} (known: {known})")
    return build_profile(name, spec, ctx)


def scorer_context(
    settings: RouterSettings,
    index: KvBlockIndex | None = None,
    prefix_memory: PrefixMemory | None = None,
) -> ScorerContext:
    return ScorerContext(
        prefix_chunk_chars=settings.prefix_chunk_chars,
        prefix_max_entries=settings.prefix_max_entries,
        kv_index=index,
        kv_prefix_weight=settings.kv_prefix_weight,
        prefix_memory=prefix_memory,
    )


def aggregated_profile(settings: RouterSettings, index: KvBlockIndex | None) -> Profile:
    """The aggregated routing logic: --aggregated-profile, else --routing-logic's profile."""
    name = settings.aggregated_profile or settings.routing_logic.value
    if not settings.aggregated_profile and name not in builtin_profiles(0.0)["both"]:
        name = "roundrobin"  # disagg_prefill: its direct requests use their planned engine
    return profile_for("both", name, settings.scheduling_profiles, scorer_context(settings, index))
