"""The scorer architecture: filters -> weighted scorers in tiers -> picker, profiles by name."""

from collections import Counter

import pytest
from pdrouter.config import ProfileSpec, ScorerSpec, load_settings
from pdrouter.discovery.endpoint import Role
from pdrouter.kvcache.index import KvBlockIndex
from pdrouter.scheduling.decider import PromptLength, UncachedTokens
from pdrouter.scheduling.framework import NoCandidate
from pdrouter.scheduling.pd import PdDecision, build_pd_scheduler
from pdrouter.scheduling.profiles import (
    ScorerContext,
    aggregated_profile,
    build_profile,
    profile_for,
)
from pdrouter.scheduling.request import RequestFeatures

from tests.router.helpers import engine

STATIC = ["--static-backends", "http://a:1", "--static-models", "tiny"]
KEYS = tuple(range(100, 110))  # a prompt of 10 full blocks
REQ = RequestFeatures("tiny", prompt_tokens=170, block_hashes=KEYS, block_size=16)


def spec(*scorers: tuple[str, float, int], filters: tuple[str, ...] = ()) -> ProfileSpec:
    return ProfileSpec(
        filters=list(filters),
        scorers=[ScorerSpec(name=n, weight=w, tier=t) for n, w, t in scorers],
    )


def test_weighted_sum_trades_cache_against_queue() -> None:
    index = KvBlockIndex()
    index.store("a", KEYS)  # holds the whole prompt
    a, b = engine("a", waiting=3), engine("b")
    ctx = ScorerContext(kv_index=index)
    # A full hit is worth 4 queued requests: a (3 queued) wins, then loses at 5 queued.
    profile = build_profile("p", spec(("kv_prefix", 4, 0), ("queue", 1, 0)), ctx)
    assert profile.pick([a, b], REQ).id == "a"
    a.in_flight = 2
    assert profile.pick([a, b], REQ).id == "b"


def test_later_tier_only_breaks_ties() -> None:
    idle_but_running = engine("a", running=9)
    queued = engine("b", waiting=1)
    fresh = engine("c", running=1)
    profile = build_profile("p", spec(("queue", 1, 0), ("running", 1, 1)), ScorerContext())
    # a and c tie on the queue (0); running decides between them, b never competes.
    assert profile.pick([idle_but_running, queued, fresh], REQ).id == "c"


def test_filter_narrows_and_empty_result_is_no_candidate() -> None:
    busy, idle = engine("a", waiting=2), engine("b")
    profile = build_profile("p", spec(filters=("least_queue",)), ScorerContext())
    assert profile.pick([busy, idle], REQ).id == "b"
    with pytest.raises(NoCandidate):
        profile.pick([], REQ)


def test_ties_take_turns_over_a_stable_order() -> None:
    engines = [engine(n) for n in "cab"]
    profile = profile_for("both", "least_loaded", {}, ScorerContext())
    picks = Counter(profile.pick(engines, REQ).id for _ in range(30))
    assert picks == {"a": 10, "b": 10, "c": 10}


def test_custom_profile_from_yaml_config(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "router.yaml"
    cfg.write_text(
        "routing_logic: least_loaded\n"
        "aggregated_profile: busy_first\n"
        "scheduling_profiles:\n"
        "  busy_first:\n"
        "    scorers:\n"
        "      - {name: queue, weight: -1}\n"
    )
    settings = load_settings([*STATIC, "--config", str(cfg)], {})
    profile = aggregated_profile(settings, None)
    assert profile.pick([engine("a"), engine("b", waiting=5)], REQ).id == "b"


def test_profiles_survive_the_environment_round_trip() -> None:
    from pdrouter.config import settings_as_env

    profiles = '{"mine": {"scorers": [{"name": "kv_prefix", "weight": 3}]}}'
    settings = load_settings([*STATIC, "--scheduling-profiles", profiles], {})
    again = load_settings([], settings_as_env(settings))
    assert again.scheduling_profiles == settings.scheduling_profiles
    assert again.scheduling_profiles["mine"].scorers[0].weight == 3


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        (spec(("qeue", 1, 0)), "unknown scorer 'qeue'"),
        (ProfileSpec(picker="random"), "unknown filter or picker 'random'"),
        (spec(("kv_prefix", 1, 0)), "needs --kv-events"),
    ],
)
def test_bad_profiles_fail_at_start_naming_the_part(profile: ProfileSpec, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_profile("mine", profile, ScorerContext())


def test_unknown_profile_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="known: kv_prefix, least_queue, roundrobin, session"):
        profile_for("prefill", "fastest", {}, ScorerContext())


def test_kv_prefill_profile_prefers_the_engine_holding_the_prefix() -> None:
    index = KvBlockIndex()
    index.store("p1", KEYS[:3])
    index.store("p2", KEYS[:8])
    settings = load_settings(
        [*STATIC, "--routing-logic", "disagg_prefill", "--kv-events", "--prefill-profile",
         "kv_prefix"],
        {},
    )  # fmt: skip
    sched = build_pd_scheduler(settings, index)
    engines = [engine("p1", Role.PREFILL), engine("p2", Role.PREFILL), engine("d", Role.DECODE)]
    assert sched.plan(engines, REQ).prefill.id == "p2"  # type: ignore[union-attr]
    engines[1].in_flight = 8  # 0.8 of the prompt is not worth 8 queued requests at weight 8
    assert sched.plan(engines, REQ).prefill.id == "p1"  # type: ignore[union-attr]


def test_uncached_tokens_decide_conditional_pd() -> None:
    index = KvBlockIndex()
    index.store("d", KEYS[:9])  # the decoder holds 144 of the 170 tokens
    decoder = engine("d", Role.DECODE)
    assert not UncachedTokens(index, 64).disaggregate(REQ, decoder)  # 26 uncached: direct
    assert UncachedTokens(index, 16).disaggregate(REQ, decoder)
    # Without the index the same prompt counts in full.
    assert PromptLength(64).disaggregate(REQ, decoder)


def test_pd_scheduler_runs_cached_prompts_direct() -> None:
    index = KvBlockIndex()
    index.store("d", KEYS)
    settings = load_settings(
        [*STATIC, "--routing-logic", "disagg_prefill", "--kv-events",
         "--pd-min-uncached-tokens", "100"],
        {},
    )  # fmt: skip
    sched = build_pd_scheduler(settings, index)
    engines = [engine("p", Role.PREFILL), engine("d", Role.DECODE), engine("d2", Role.DECODE)]
    engines[2].in_flight = 1  # d is the decoder the decode profile picks
    plan = sched.plan(engines, REQ)
    assert plan.decision is PdDecision.DIRECT and plan.decode.id == "d"
    assert plan.reason == "cached_prompt"
    fresh = RequestFeatures("tiny", prompt_tokens=170, block_hashes=(1, 2, 3), block_size=16)
    assert sched.plan(engines, fresh).decision is PdDecision.DISAGGREGATED


def test_kv_profile_spreads_new_conversations_but_keeps_follow_ups() -> None:
    """Prefix affinity alone herds: the engine that first holds a shared system prompt would
    attract every new conversation while the others stay empty (and it evicts)."""
    index = KvBlockIndex()
    system, conversation = tuple(range(1, 5)), tuple(range(100, 106))
    index.store("a", system + conversation)
    settings = load_settings(
        [*STATIC, "--routing-logic", "disagg_prefill", "--kv-events", "--prefill-profile",
         "kv_prefix"],
        {},
    )  # fmt: skip
    sched = build_pd_scheduler(settings, index)
    engines = [engine(n, Role.PREFILL) for n in "abcd"] + [engine("x", Role.DECODE)]
    new = RequestFeatures("tiny", prompt_tokens=160, block_hashes=(*system, 7), block_size=16)
    assert sched.plan(engines, new).prefill.id != "a"  # type: ignore[union-attr]
    follow_up = RequestFeatures(
        "tiny", prompt_tokens=176, block_hashes=system + conversation, block_size=16
    )
    assert sched.plan(engines, follow_up).prefill.id == "a"  # type: ignore[union-attr]
