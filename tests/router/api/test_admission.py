"""The admission gate without sockets: slots, queue order, body budget, cancellation, shutdown."""

from __future__ import annotations

import asyncio

import pytest
from pdrouter.api.admission import AdmissionGate, AdmissionLimits
from pdrouter.proxy.errors import RouterError


def _gate(
    concurrent: int = 2, queued: int = 4, timeout: float = 5.0, budget: int = 0
) -> AdmissionGate:
    return AdmissionGate(AdmissionLimits(concurrent, queued, timeout, budget))


async def test_waiters_are_admitted_in_arrival_order() -> None:
    gate = _gate(concurrent=1)
    assert gate.try_enter(10)
    order: list[int] = []

    async def wait(i: int) -> None:
        await gate.enter(10)
        order.append(i)

    tasks = [asyncio.create_task(wait(i)) for i in range(3)]
    await asyncio.sleep(0)
    for _ in range(3):
        gate.leave(10)
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2] and gate.active == 1


async def test_full_queue_and_queue_timeout_are_429() -> None:
    gate = _gate(concurrent=1, queued=1, timeout=0.05)
    assert gate.try_enter(1)
    waiter = asyncio.create_task(gate.enter(1))
    await asyncio.sleep(0)
    with pytest.raises(RouterError) as full:
        await gate.enter(1)
    assert full.value.status == 429 and full.value.code == "queue_full"
    with pytest.raises(RouterError) as late:
        await waiter
    assert late.value.code == "queue_timeout" and late.value.retry_after == 1
    assert gate.queued == 0 and gate.active == 1


async def test_body_budget_holds_large_bodies_back_but_always_fits_one() -> None:
    gate = _gate(concurrent=100, budget=100)
    assert gate.try_enter(60)
    assert not gate.try_enter(60)
    waiter = asyncio.create_task(gate.enter(60))
    await asyncio.sleep(0)
    assert not waiter.done()
    gate.leave(60)
    await waiter
    assert gate.body_bytes == 60
    gate.leave(60)
    assert gate.try_enter(150)  # bigger than the budget but alone: admitted (never starves)


async def test_a_cancelled_waiter_leaves_no_trace() -> None:
    gate = _gate(concurrent=1)
    assert gate.try_enter(1)
    waiter = asyncio.create_task(gate.enter(1))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    gate.leave(1)
    assert gate.active == 0 and gate.queued == 0 and gate.try_enter(1)


async def test_shutdown_rejects_waiting_and_later_requests() -> None:
    gate = _gate(concurrent=1)
    assert gate.try_enter(1)
    waiter = asyncio.create_task(gate.enter(1))
    await asyncio.sleep(0)
    gate.close(RouterError(503, "shutting down", code="shutting_down"))
    with pytest.raises(RouterError):
        await waiter
    assert not gate.try_enter(1)
    with pytest.raises(RouterError):
        await gate.enter(1)


def test_workers_share_the_limits() -> None:
    limits = AdmissionLimits.share(2048, 512, 30.0, 64 << 20, workers=3)
    assert (limits.max_concurrent, limits.max_queued) == (683, 171)
    assert AdmissionLimits.share(0, 0, 1.0, 0, workers=4).max_concurrent == 0
