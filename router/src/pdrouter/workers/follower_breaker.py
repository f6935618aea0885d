"""A worker's side of an engine's circuit breaker, which the control plane owns.

The worker routes by the control plane's breaker state. While half-open, the control plane
hands each worker a share of the trial slots of that episode, so all workers together send no
more trials than one process would. Outcomes go back to the control plane in order-preserving
tallies; a failure wakes the reporter at once instead of waiting for the next report tick.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pdrouter.stats.breaker import NOT_A_TRIAL, BreakerState


@dataclass(slots=True)
class OutcomeTally:
    """Outcomes since the last report, enough to replay them in order on the control plane:
    consecutive-failure counting only needs the failures before the first success, whether a
    success came, and the failures after the last one."""

    lead: int = 0
    success: bool = False
    tail: int = 0
    trial_ok: int = 0
    trial_failed: int = 0
    episode: int = 0

    def to_wire(self) -> list[int]:
        return [
            self.lead,
            int(self.success),
            self.tail,
            self.trial_ok,
            self.trial_failed,
            self.episode,
        ]

    @classmethod
    def from_wire(cls, data: list[int]) -> OutcomeTally:
        lead, success, tail, trial_ok, trial_failed, episode = data
        return cls(lead, bool(success), tail, trial_ok, trial_failed, episode)


class FollowerBreaker:
    """Implements stats.breaker.Breaker for a worker process."""

    __slots__ = ("_episode", "_notify", "_seen", "_slots", "_state", "tally")

    def __init__(self, notify: Callable[[], None]) -> None:
        self._state = BreakerState.CLOSED
        self._episode = 0
        self._slots = 0
        self._seen: tuple[int, int] = (0, 0)  # the control plane's last (state, episode)
        self._notify = notify  # wakes the reporter
        self.tally: OutcomeTally | None = None

    # --- from the control plane -------------------------------------------------------------
    def apply(self, state: int, episode: int, slots: int) -> None:
        """The control plane's breaker. A new (state, episode) resets this worker's trial
        slots; a repeat of the last one leaves local bookkeeping alone."""
        if (state, episode) == self._seen:
            return
        self._seen = (state, episode)
        self._state = BreakerState(state)
        self._episode = episode
        self._slots = slots if self._state is BreakerState.HALF_OPEN else 0

    def take_tally(self) -> OutcomeTally | None:
        tally, self.tally = self.tally, None
        return tally

    def _tally(self) -> OutcomeTally:
        if self.tally is None:
            self.tally = OutcomeTally(episode=self._episode)
        return self.tally

    # --- Breaker ----------------------------------------------------------------------------
    @property
    def state(self) -> BreakerState:
        return self._state

    def allows(self) -> bool:
        return self._state is BreakerState.CLOSED or (
            self._state is BreakerState.HALF_OPEN and self._slots > 0
        )

    def acquire(self) -> int:
        if self._state is not BreakerState.HALF_OPEN or self._slots <= 0:
            return NOT_A_TRIAL
        self._slots -= 1
        return self._episode

    def release(self, token: int = NOT_A_TRIAL) -> None:
        if token and token == self._episode and self._state is BreakerState.HALF_OPEN:
            self._slots += 1

    def record_success(self, token: int = NOT_A_TRIAL) -> None:
        tally = self._tally()
        if token:
            if token == self._episode:
                tally.trial_ok += 1
                tally.episode = token
                self.release(token)  # the slot serves the next trial, as in one process
                self._notify()
            return
        tally.success = True
        tally.tail = 0

    def record_failure(self, token: int = NOT_A_TRIAL) -> bool:
        tally = self._tally()
        if token:
            if token == self._episode:
                tally.trial_failed += 1
                tally.episode = token
                self._state = BreakerState.OPEN  # stop trials now; the control plane re-arms
                self._slots = 0
            self._notify()
            return token == self._episode
        if tally.success:
            tally.tail += 1
        else:
            tally.lead += 1
        self._notify()
        return False

    def probe_ok(self) -> None:
        """Workers do not probe: the control plane does."""

    def close(self) -> None:
        """Workers do not decide: the control plane does."""
