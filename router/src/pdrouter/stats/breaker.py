"""Per-engine circuit breaker: consecutive failures open it, a trial request closes it."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable


class BreakerState(enum.IntEnum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class CircuitBreaker:
    """Opens after `threshold` consecutive failures; after `cooldown` s lets one trial through."""

    __slots__ = ("_clock", "_failures", "_opened_at", "_trial_out", "cooldown", "threshold")

    def __init__(
        self, threshold: int, cooldown: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_out = False

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at >= self.cooldown:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def allows(self) -> bool:
        """Whether a new request may go to this engine now (does not reserve the trial)."""
        state = self.state
        return state is BreakerState.CLOSED or (
            state is BreakerState.HALF_OPEN and not self._trial_out
        )

    def on_dispatch(self) -> None:
        if self.state is BreakerState.HALF_OPEN:
            self._trial_out = True

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial_out = False

    def record_failure(self) -> bool:
        """Count a failure; returns True if this failure opened (or re-opened) the breaker."""
        self._failures += 1
        self._trial_out = False
        if self._opened_at is not None or self._failures >= self.threshold:
            self._opened_at = self._clock()
            return True
        return False
