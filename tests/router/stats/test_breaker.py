"""The circuit breaker and the engine pool's state ownership, without sockets."""

from __future__ import annotations

from pdrouter.discovery.endpoint import Endpoint, Role
from pdrouter.proxy.tracking import EngineCall
from pdrouter.stats.breaker import NOT_A_TRIAL, BreakerPolicy, BreakerState, CircuitBreaker
from pdrouter.stats.engine_state import EnginePool
from pdrouter.stats.router_metrics import RouterMetrics

POLICY = BreakerPolicy(failure_threshold=3, cooldown=5.0, success_threshold=2, half_open_probes=2)


def _breaker(now: list[float]) -> CircuitBreaker:
    return CircuitBreaker(POLICY, clock=lambda: now[0])


def _open(b: CircuitBreaker) -> None:
    assert not b.record_failure() and not b.record_failure()
    assert b.record_failure() and b.state is BreakerState.OPEN and not b.allows()


def test_consecutive_failures_open_and_a_success_resets_the_count() -> None:
    b = _breaker([0.0])
    b.record_failure()
    b.record_failure()
    b.record_success()
    assert not b.record_failure() and b.state is BreakerState.CLOSED
    _open(_breaker([0.0]))


def test_half_open_admits_a_few_trials_and_closes_after_n_successes() -> None:
    now = [0.0]
    b = _breaker(now)
    _open(b)
    now[0] = 6.0
    assert b.state is BreakerState.HALF_OPEN and b.allows()
    first, second = b.acquire(), b.acquire()
    assert first and first == second  # both trials of the same episode
    assert not b.allows()  # two probes at once, no more
    b.record_success(first)
    assert b.state is BreakerState.HALF_OPEN and b.allows()  # one success of two
    b.record_success(second)
    assert b.state is BreakerState.CLOSED


def test_a_cancelled_trial_gives_its_slot_back() -> None:
    now = [0.0]
    b = _breaker(now)
    _open(b)
    now[0] = 6.0
    tokens = [b.acquire(), b.acquire()]
    assert not b.allows()
    b.release(tokens[0])  # the trial's client hung up: no verdict
    assert b.allows() and b.state is BreakerState.HALF_OPEN
    b.release(tokens[0])  # a second release of the same call changes nothing ...
    b.release(tokens[1])
    b.acquire()
    b.acquire()
    assert not b.allows()  # ... the slots are not counted twice


def test_a_failed_trial_reopens_and_late_outcomes_of_old_calls_do_not_count() -> None:
    now = [0.0]
    b = _breaker(now)
    old_call = b.acquire()  # dispatched while closed
    assert old_call == NOT_A_TRIAL
    _open(b)
    now[0] = 6.0
    trial = b.acquire()
    assert b.record_failure(trial) and b.state is BreakerState.OPEN
    assert not b.record_failure(old_call)  # a request from before the opening
    b.record_success(old_call)
    assert b.state is BreakerState.OPEN
    now[0] = 11.5
    stale = trial  # a trial of the previous episode reporting late
    b.record_success(stale)
    b.record_success(stale)
    assert b.state is BreakerState.HALF_OPEN


def test_a_good_probe_closes_it_when_trials_reach_no_verdict() -> None:
    now = [0.0]
    b = _breaker(now)
    _open(b)
    b.probe_ok()
    assert b.state is BreakerState.OPEN
    now[0] = 5.0
    b.probe_ok()
    assert b.state is BreakerState.HALF_OPEN  # trials get a cooldown to decide
    b.acquire()  # a trial whose client never comes back
    now[0] = 10.0
    b.probe_ok()
    assert b.state is BreakerState.CLOSED


def _endpoint(labels: tuple[tuple[str, str], ...] = ()) -> Endpoint:
    return Endpoint(id="pod-1", url="http://10.0.0.1:8000", model="tiny", labels=labels)


def test_a_relabelled_engine_keeps_its_state_object_and_calls_balance() -> None:
    pool = EnginePool(lambda: CircuitBreaker(POLICY), 60.0)
    metrics = RouterMetrics(pool, 60.0)
    pool.update([_endpoint()])
    state = pool.get("pod-1")
    assert state is not None
    calls = [EngineCall(state, metrics, "aggregated") for _ in range(3)]
    added, removed = pool.update([_endpoint((("rev", "2"),))])
    assert not added and not removed
    assert pool.get("pod-1") is state and state.endpoint.labels == (("rev", "2"),)
    for call in calls:
        call.close("ok")
        call.close("cancelled")  # closing twice is a no-op
    assert state.in_flight == 0


def test_an_engine_that_flaps_in_discovery_gets_its_state_back_while_calls_run() -> None:
    pool = EnginePool(lambda: CircuitBreaker(POLICY), 60.0)
    metrics = RouterMetrics(pool, 60.0)
    pool.update([_endpoint()])
    state = pool.get("pod-1")
    assert state is not None
    call = EngineCall(state, metrics, "aggregated")
    pool.update([])  # not ready for a moment
    added, _ = pool.update([_endpoint()])
    assert added == [state] and state.in_flight == 1
    call.close("ok")
    assert state.in_flight == 0
    pool.update([])
    pool.update([_endpoint()])
    fresh = pool.get("pod-1")
    assert fresh is not state  # nothing ran on it any more: a new engine starts clean


def test_recent_failures_count_as_load_until_the_window_passes() -> None:
    pool = EnginePool(lambda: CircuitBreaker(POLICY), 60.0)
    pool.update([Endpoint(id="a", url="http://a:1", model="tiny", role=Role.BOTH)])
    state = pool.get("a")
    assert state is not None
    state.record_failure()
    state.record_failure()
    assert state.load == 2
    pool.prune_stats(failure_window=10.0)
    assert state.recent_failures == 2
    pool.prune_stats(failure_window=0.0)
    assert state.recent_failures == 0 and state.load == 0
