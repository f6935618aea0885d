"""ExponentialBackoff: growth, cap, jitter bounds, reset."""

from __future__ import annotations

import random

import pytest
from pdrouter.discovery.backoff import ExponentialBackoff


def test_delays_double_within_jitter_bounds_and_cap() -> None:
    backoff = ExponentialBackoff(0.5, 4.0, rng=random.Random(7))
    nominal = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    for expected in nominal:
        delay = backoff.next_delay()
        assert expected / 2 <= delay <= expected


def test_reset_starts_over() -> None:
    backoff = ExponentialBackoff(1.0, 60.0, rng=random.Random(1))
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() <= 1.0


def test_long_outage_does_not_overflow() -> None:
    backoff = ExponentialBackoff(0.5, 30.0)
    for _ in range(10_000):
        delay = backoff.next_delay()
    assert 15.0 <= delay <= 30.0


def test_jitter_spreads_retries() -> None:
    delays = {ExponentialBackoff(1.0, 1.0).next_delay() for _ in range(20)}
    assert len(delays) > 1


@pytest.mark.parametrize(("initial", "cap"), [(0, 1), (2, 1), (-1, 5)])
def test_rejects_bad_settings(initial: float, cap: float) -> None:
    with pytest.raises(ValueError):
        ExponentialBackoff(initial, cap)
