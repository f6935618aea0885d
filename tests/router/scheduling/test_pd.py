from collections import Counter

import pytest
from pdrouter.discovery.endpoint import Role
from pdrouter.scheduling.logic import PrefixAffinity, SessionAffinity
from pdrouter.scheduling.pd import PdDecision, PdScheduler, PdUnavailable
from pdrouter.scheduling.request import RequestFeatures

from tests.router.helpers import engine

LONG = RequestFeatures("tiny", prompt="x" * 4000)


def test_disaggregates_on_least_loaded_prefill_and_decode() -> None:
    p1, p2 = engine("p1", Role.PREFILL, waiting=4), engine("p2", Role.PREFILL)
    d1, d2 = engine("d1", Role.DECODE, running=8), engine("d2", Role.DECODE, running=2)
    plan = PdScheduler().plan([p1, p2, d1, d2], LONG)
    assert plan.decision is PdDecision.DISAGGREGATED
    assert (plan.prefill.id, plan.decode.id) == ("p2", "d2")  # type: ignore[union-attr]


def test_decode_choice_weighs_kv_usage_when_running_ties() -> None:
    d1 = engine("d1", Role.DECODE, running=2, kv=0.9)
    d2 = engine("d2", Role.DECODE, running=2, kv=0.1)
    plan = PdScheduler().plan([engine("p", Role.PREFILL), d1, d2], LONG)
    assert plan.decode.id == "d2"


def test_in_flight_reserved_at_dispatch_spreads_a_burst() -> None:
    prefills = [engine(f"p{i}", Role.PREFILL) for i in range(2)]
    decodes = [engine(f"d{i}", Role.DECODE) for i in range(2)]
    sched = PdScheduler()
    chosen = []
    for _ in range(4):
        plan = sched.plan(prefills + decodes, LONG)
        plan.prefill.in_flight += 1  # type: ignore[union-attr]
        plan.decode.in_flight += 1
        chosen.append((plan.prefill.id, plan.decode.id))  # type: ignore[union-attr]
    assert {p for p, _ in chosen} == {"p0", "p1"}
    assert {d for _, d in chosen} == {"d0", "d1"}


def test_prefix_breaks_ties_between_equally_loaded_prefills() -> None:
    prefills = [engine(f"p{i}", Role.PREFILL) for i in range(3)]
    sched = PdScheduler(prefix=PrefixAffinity(chunk_chars=32))
    req = RequestFeatures("tiny", prompt="system prompt " * 50)
    first = sched.plan([*prefills, engine("d", Role.DECODE)], req).prefill
    for _ in range(5):
        assert sched.plan([*prefills, engine("d", Role.DECODE)], req).prefill is first


def test_short_prompt_goes_direct_to_decode() -> None:
    sched = PdScheduler(min_prompt_tokens=100)
    plan = sched.plan(
        [engine("p", Role.PREFILL), engine("d", Role.DECODE)],
        RequestFeatures("tiny", prompt="hi there"),
    )
    assert plan.decision is PdDecision.DIRECT and plan.prefill is None
    assert plan.decode.id == "d"


def test_no_prefill_engine_is_an_error_unless_fallback() -> None:
    engines = [engine("p", Role.PREFILL, healthy=False), engine("d", Role.DECODE)]
    with pytest.raises(PdUnavailable) as info:
        PdScheduler().plan(engines, LONG)
    assert info.value.phase == "prefill"
    plan = PdScheduler(fallback_aggregated=True).plan(engines, LONG)
    assert plan.decision is PdDecision.FALLBACK and plan.decode.id == "d"


def test_plan_says_why_for_the_trace() -> None:
    """The reason the `schedule` span records: the profiles that chose, or why prefill was
    skipped."""
    engines = [engine("p", Role.PREFILL), engine("d", Role.DECODE)]
    assert PdScheduler().plan(engines, LONG).reason == "least_queue/least_loaded"
    sessions = PdScheduler(sessions=SessionAffinity())
    keyed = RequestFeatures("tiny", prompt="x" * 4000, session="user-1")
    assert sessions.plan(engines, keyed).reason == "session/session"
    assert sessions.plan(engines, LONG).reason == "least_queue/least_loaded"
    short = RequestFeatures("tiny", prompt="hi there")
    assert PdScheduler(min_prompt_tokens=100).plan(engines, short).reason == "short_prompt"
    no_prefill = [engine("p", Role.PREFILL, healthy=False), engine("d", Role.DECODE)]
    fallback = PdScheduler(fallback_aggregated=True).plan(no_prefill, LONG)
    assert fallback.reason == "no_prefill_engine"


def test_no_decode_engine_is_an_error() -> None:
    with pytest.raises(PdUnavailable) as info:
        PdScheduler().plan([engine("p", Role.PREFILL)], LONG)
    assert info.value.phase == "decode"


def test_open_breaker_takes_engine_out() -> None:
    p1, p2 = engine("p1", Role.PREFILL), engine("p2", Role.PREFILL, waiting=50)
    for _ in range(3):
        p1.breaker.record_failure()
    plan = PdScheduler().plan([p1, p2, engine("d", Role.DECODE)], LONG)
    assert plan.prefill.id == "p2"  # type: ignore[union-attr]


def test_both_engines_prefill_only_when_no_dedicated_prefiller() -> None:
    b = engine("b", Role.BOTH)
    d = engine("d", Role.DECODE)
    plan = PdScheduler().plan([b, d], LONG)
    assert plan.prefill.id == "b" and plan.decode.id == "d"  # type: ignore[union-attr]
    p = engine("p", Role.PREFILL, waiting=10)
    assert PdScheduler().plan([b, d, p], LONG).prefill.id == "p"  # type: ignore[union-attr]


def test_session_pins_a_prefill_decode_pair() -> None:
    engines = [engine(f"p{i}", Role.PREFILL) for i in range(3)]
    engines += [engine(f"d{i}", Role.DECODE) for i in range(3)]
    sched = PdScheduler(sessions=SessionAffinity())
    req = RequestFeatures("tiny", session="alice", prompt="y" * 1000)
    first = sched.plan(engines, req)
    engines[0].in_flight = engines[3].in_flight = 5  # load changes must not move the session
    again = sched.plan(engines, req)
    assert (first.prefill.id, first.decode.id) == (again.prefill.id, again.decode.id)  # type: ignore[union-attr]


def test_idle_fleet_spreads_prefill_and_decode_evenly() -> None:
    engines = [engine(f"p{i}", Role.PREFILL) for i in range(2)]
    engines += [engine(f"d{i}", Role.DECODE) for i in range(4)]
    sched = PdScheduler()
    plans = [sched.plan(engines, LONG) for _ in range(40)]  # nothing stays in flight
    assert sorted(Counter(p.prefill.id for p in plans).values()) == [20, 20]  # type: ignore[union-attr]
    assert sorted(Counter(p.decode.id for p in plans).values()) == [10, 10, 10, 10]


def test_exclusive_prefill_engines_only_ever_prefill() -> None:
    """LMCache PD: a prefill-role engine is never a decode, direct or fallback target, and a
    'both' engine is a plain engine that never prefills."""
    both, p = engine("both", Role.BOTH), engine("p", Role.PREFILL)
    sched = PdScheduler(exclusive_prefill=True, min_prompt_tokens=100, fallback_aggregated=True)
    for _ in range(6):
        plan = sched.plan([both, p], LONG)
        assert (plan.decision, plan.prefill, plan.decode) == (PdDecision.DISAGGREGATED, p, both)
        short = sched.plan([both, p], RequestFeatures("tiny", prompt="hi"))
        assert (short.decision, short.decode) == (PdDecision.DIRECT, both)
    p.healthy = False
    assert sched.plan([both, p], LONG).decision is PdDecision.FALLBACK
    with pytest.raises(PdUnavailable):
        PdScheduler(exclusive_prefill=True).plan([engine("p2", Role.PREFILL)], LONG)
    # Without the flag a 'both' engine may prefill (NIXL: it serves any request).
    assert PdScheduler().plan([both, engine("d", Role.DECODE)], LONG).prefill is both
