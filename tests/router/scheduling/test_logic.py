from collections import Counter

from pdrouter.scheduling.logic import (
    HashRing,
    LeastLoaded,
    PrefixAffinity,
    RoundRobin,
    SessionAffinity,
)
from pdrouter.scheduling.request import RequestFeatures

from tests.router.helpers import engine

REQ = RequestFeatures(model="tiny")


def test_round_robin_spreads_evenly() -> None:
    engines = [engine("a"), engine("b"), engine("c")]
    logic = RoundRobin()
    picks = Counter(logic.pick(engines, REQ).id for _ in range(300))
    assert picks == {"a": 100, "b": 100, "c": 100}


def test_least_loaded_prefers_short_queue_and_counts_in_flight() -> None:
    busy = engine("a", waiting=5)
    inflight = engine("b", in_flight=3)
    idle = engine("c", waiting=1)
    assert LeastLoaded().pick([busy, inflight, idle], REQ).id == "c"
    idle.in_flight = 10
    assert LeastLoaded().pick([busy, inflight, idle], REQ).id == "b"


def test_session_affinity_is_sticky_and_spreads_sessions() -> None:
    engines = [engine(n) for n in "abcd"]
    logic = SessionAffinity()
    first = {
        s: logic.pick(engines, RequestFeatures("tiny", session=s)).id for s in map(str, range(200))
    }
    again = {
        s: logic.pick(engines, RequestFeatures("tiny", session=s)).id for s in map(str, range(200))
    }
    assert first == again
    assert set(Counter(first.values())) == set("abcd")


def test_session_affinity_moves_only_the_leaving_engines_sessions() -> None:
    engines = [engine(n) for n in "abcd"]
    logic = SessionAffinity()
    before = {
        s: logic.pick(engines, RequestFeatures("tiny", session=s)).id for s in map(str, range(400))
    }
    after = {
        s: logic.pick(engines[:3], RequestFeatures("tiny", session=s)).id
        for s in map(str, range(400))
    }
    moved = [s for s in before if before[s] != after[s]]
    assert moved and all(before[s] == "d" for s in moved)


def test_session_without_key_falls_back_to_least_loaded() -> None:
    engines = [engine("a", waiting=3), engine("b")]
    assert SessionAffinity().pick(engines, REQ).id == "b"


def test_hash_ring_is_stable_across_instances() -> None:
    assert HashRing(["x", "y", "z"]).lookup("user-7") == HashRing(["z", "y", "x"]).lookup("user-7")


def test_prefix_affinity_sends_repeated_prefix_to_same_engine() -> None:
    engines = [engine("a"), engine("b"), engine("c")]
    logic = PrefixAffinity(chunk_chars=16)
    system = "You are a helpful assistant. " * 8
    first = logic.pick(engines, RequestFeatures("tiny", prompt=system + "question one"))
    first.in_flight += 1  # it is now the busiest, but only by one
    second = logic.pick(engines, RequestFeatures("tiny", prompt=system + "question two"))
    assert second.id == first.id


def test_prefix_affinity_gives_up_affinity_when_owner_is_overloaded() -> None:
    engines = [engine("a"), engine("b")]
    logic = PrefixAffinity(chunk_chars=16, slack=2)
    prompt = "shared context " * 20
    owner = logic.pick(engines, RequestFeatures("tiny", prompt=prompt))
    owner.in_flight = 10
    assert logic.pick(engines, RequestFeatures("tiny", prompt=prompt)).id != owner.id


def test_prefix_affinity_memory_is_bounded() -> None:
    logic = PrefixAffinity(chunk_chars=16, max_entries=100)
    engines = [engine("a"), engine("b")]
    for i in range(500):
        logic.pick(engines, RequestFeatures("tiny", prompt=f"{i:08d}" * 40))
    assert len(logic) <= 100
