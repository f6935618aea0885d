"""Exponential backoff with jitter for retrying the Kubernetes API."""

from __future__ import annotations

import random


class ExponentialBackoff:
    """Delays that double per consecutive failure up to a cap, with "equal jitter".

    Half of each delay is fixed and half random, so many routers restarting together do not
    hit the API server in lock-step, yet no retry comes sooner than half the nominal delay.
    """

    def __init__(
        self, initial_s: float = 0.5, max_s: float = 30.0, rng: random.Random | None = None
    ) -> None:
        if initial_s <= 0 or max_s < initial_s:
            raise ValueError("backoff needs 0 < initial_s <= max_s")
        self._initial_s = initial_s
        self._max_s = max_s
        self._failures = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """The delay before the next retry; each call counts one more failure."""
        # Cap the exponent so a long outage cannot overflow the float.
        nominal = min(self._max_s, self._initial_s * 2.0 ** min(self._failures, 32))
        self._failures += 1
        return nominal / 2 + self._rng.uniform(0, nominal / 2)

    def reset(self) -> None:
        """Forget past failures after a success."""
        self._failures = 0
