"""Admission control for the generation routes: a concurrency limit with a bounded FIFO queue,
and a budget of request-body bytes held at once.

A request is admitted when a slot is free and its body (the declared Content-Length, or
--max-body-bytes when it declares none) fits in the budget; otherwise it waits in the queue,
in arrival order, up to --queue-timeout. A full queue or a wait past the timeout is a 429 with
Retry-After, as the SGLang gateway and vllm-router do. Control routes are never queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from dataclasses import dataclass

from pdrouter.proxy.errors import RouterError

RETRY_AFTER_S = 1


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    """One process's share of the router-wide limits (0: no limit)."""

    max_concurrent: int
    max_queued: int
    queue_timeout: float
    max_body_bytes: int  # budget of bodies held at once

    @classmethod
    def share(
        cls, max_concurrent: int, max_queued: int, queue_timeout: float, max_body: int, workers: int
    ) -> AdmissionLimits:
        """With --workers N each worker admits its part of the router-wide limits."""

        def part(limit: int) -> int:
            return math.ceil(limit / workers) if limit else 0

        return cls(part(max_concurrent), part(max_queued), queue_timeout, part(max_body))


class _Waiter:
    __slots__ = ("future", "size")

    def __init__(self, future: asyncio.Future[None], size: int) -> None:
        self.future = future
        self.size = size


def overloaded(code: str, message: str) -> RouterError:
    return RouterError(
        429,
        message,
        type="rate_limit_error",
        code=code,
        phase="admission",
        retryable=True,
        retry_after=RETRY_AFTER_S,
    )


class AdmissionGate:
    """Counts admitted requests and their body bytes; `enter`/`leave` once per request."""

    def __init__(self, limits: AdmissionLimits) -> None:
        self.limits = limits
        self.active = 0
        self.body_bytes = 0
        self._queue: deque[_Waiter] = deque()
        self._closed: RouterError | None = None

    @property
    def queued(self) -> int:
        return len(self._queue)

    def _fits(self, size: int) -> bool:
        limits = self.limits
        if limits.max_concurrent and self.active >= limits.max_concurrent:
            return False
        # One request always fits an empty budget: the settings check it holds a largest body.
        budget = limits.max_body_bytes
        return not budget or self.body_bytes + size <= budget or not self.body_bytes

    def try_enter(self, size: int) -> bool:
        """The fast path: admit now if nobody waits and the request fits."""
        if self._queue or self._closed is not None or not self._fits(size):
            return False
        self.active += 1
        self.body_bytes += size
        return True

    async def enter(self, size: int) -> None:
        """Wait for admission in FIFO order; raises a 429 RouterError (or the shutdown error)."""
        if self._closed is not None:
            raise self._closed
        if len(self._queue) >= self.limits.max_queued:
            raise overloaded(
                "queue_full",
                f"the router is at its limit of {self.limits.max_concurrent} concurrent requests "
                "and its queue is full; retry later",
            )
        waiter = _Waiter(asyncio.get_running_loop().create_future(), size)
        self._queue.append(waiter)
        try:
            async with asyncio.timeout(self.limits.queue_timeout):
                await waiter.future
        except TimeoutError:
            self._forget(waiter)
            raise overloaded(
                "queue_timeout",
                f"the request waited {self.limits.queue_timeout:g}s for a slot; retry later",
            ) from None
        except BaseException:
            self._forget(waiter)  # the client went away while waiting (or was admitted meanwhile)
            raise

    def _forget(self, waiter: _Waiter) -> None:
        if waiter.future.done() and not waiter.future.cancelled():
            if waiter.future.exception() is None:  # admitted just as it gave up: give it back
                self.leave(waiter.size)
            return
        with contextlib.suppress(ValueError):  # already taken off by the shutdown
            self._queue.remove(waiter)
        self._admit_waiting()  # a waiter at the head that did not fit may unblock the next

    def leave(self, size: int) -> None:
        self.active -= 1
        self.body_bytes -= size
        if self._queue:
            self._admit_waiting()

    def _admit_waiting(self) -> None:
        queue = self._queue
        while queue and self._fits(queue[0].size):
            waiter = queue.popleft()
            if waiter.future.done():
                continue
            self.active += 1
            self.body_bytes += waiter.size
            waiter.future.set_result(None)

    def close(self, error: RouterError) -> None:
        """Shutdown's cut: every waiting request gets `error`, and so does every later one."""
        self._closed = error
        while self._queue:
            waiter = self._queue.popleft()
            if not waiter.future.done():
                waiter.future.set_exception(error)
