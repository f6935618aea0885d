"""Per-engine circuit breaker: closed -> open -> half-open -> closed.

Consecutive request failures open it; after a cooldown it lets a few trial requests through
(half-open) and closes after enough of them succeed. A failed trial opens it again. If trials
reach no verdict for another cooldown, a good health probe closes it.
A trial that ends without a verdict (its client hung up) gives its slot back, so one client can
never leave an engine out of rotation. Every call that takes a trial slot holds a token and hands
it back exactly once through `release`, `record_success` or `record_failure`.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class BreakerState(enum.IntEnum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


NOT_A_TRIAL = 0  # the token of a call that did not take a half-open trial slot


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """How breakers behave; the same for every engine and, with --workers N, every worker."""

    failure_threshold: int = 5  # consecutive failures that open a closed breaker
    cooldown: float = 10.0  # seconds open before trials are let through
    success_threshold: int = 2  # trial successes that close a half-open breaker
    half_open_probes: int = 3  # trial requests in flight at once while half-open


class Breaker(Protocol):
    """What an engine call needs: the breaker itself, or a worker's view of the control
    plane's breaker (pdrouter.workers)."""

    @property
    def state(self) -> BreakerState: ...

    def allows(self) -> bool:
        """Whether a new request may go to the engine now (reserves nothing)."""
        ...

    def acquire(self) -> int:
        """Called when a request is dispatched; returns its trial token (NOT_A_TRIAL if none)."""
        ...

    def release(self, token: int = NOT_A_TRIAL) -> None:
        """The call ended without a verdict on the engine (cancelled): give the slot back."""
        ...

    def record_success(self, token: int = NOT_A_TRIAL) -> None: ...

    def record_failure(self, token: int = NOT_A_TRIAL) -> bool:
        """Charge a failure; True if this opened (or re-opened) the breaker."""
        ...

    def probe_ok(self) -> None:
        """A good health probe (only the owner of engine state probes)."""
        ...

    def close(self) -> None:
        """Forget past failures (the engine came back after an outage)."""
        ...


class CircuitBreaker:
    """The breaker that decides: one per engine in the process that owns engine state."""

    __slots__ = (
        "_clock",
        "_failures",
        "_opened_at",
        "_probes_out",
        "_successes",
        "episode",
        "policy",
    )

    def __init__(self, policy: BreakerPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probes_out = 0
        self._successes = 0
        # Each opening starts a new episode; a trial's token is the episode it belongs to, so
        # an outcome that arrives after the breaker moved on is never counted twice.
        self.episode = 0

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at >= self.policy.cooldown:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def allows(self) -> bool:
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        return state is BreakerState.HALF_OPEN and self._probes_out < self.policy.half_open_probes

    def acquire(self) -> int:
        if self._opened_at is None or self.state is not BreakerState.HALF_OPEN:
            return NOT_A_TRIAL
        self._probes_out += 1
        return self.episode

    def release(self, token: int = NOT_A_TRIAL) -> None:
        if token and token == self.episode and self._opened_at is not None:
            self._probes_out = max(self._probes_out - 1, 0)

    def record_success(self, token: int = NOT_A_TRIAL) -> None:
        if self._opened_at is None:
            self._failures = 0
            return
        # While open, only this episode's trials count: a request sent before the breaker
        # opened says nothing about the engine now.
        if token and token == self.episode:
            self._probes_out = max(self._probes_out - 1, 0)
            self._successes += 1
            if self._successes >= self.policy.success_threshold:
                self.close()

    def record_failure(self, token: int = NOT_A_TRIAL) -> bool:
        if self._opened_at is None:
            self._failures += 1
            if self._failures >= self.policy.failure_threshold:
                self._open()
                return True
            return False
        if token and token == self.episode:
            self._open()  # a failed trial: wait another cooldown
            return True
        return False

    def probe_ok(self) -> None:
        """A good health probe. Trials decide a half-open breaker; if they reach no verdict
        within another cooldown (no traffic, or their clients hung up), the probe closes it."""
        opened = self._opened_at
        if opened is not None and self._clock() - opened >= 2 * self.policy.cooldown:
            self.close()

    def close(self) -> None:
        self._opened_at = None
        self._failures = 0
        self._probes_out = 0
        self._successes = 0

    def _open(self) -> None:
        self._opened_at = self._clock()
        self.episode += 1
        self._failures = 0
        self._probes_out = 0
        self._successes = 0
