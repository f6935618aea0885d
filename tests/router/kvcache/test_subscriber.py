"""The subscriber against real ZMQ sockets: live batches, gaps (replayed or not), late joins,
restarts, disconnects and engines leaving. The publisher is a test double with vLLM's wire
protocol (tests/doubles/kv_publisher.py); real engines: tests/e2e/test_kv_events.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
from pdrouter.config import KvHashAlgo
from pdrouter.discovery.endpoint import Endpoint
from pdrouter.kvcache.hashing import BlockHasher
from pdrouter.kvcache.index import KvBlockIndex
from pdrouter.kvcache.subscriber import KvEventSubscriber

from tests.doubles.kv_publisher import FakeKvPublisher, cleared, removed, stored

HASHER = BlockHasher(KvHashAlgo.SHA256, block_size=4, seed="0")


def endpoint(pub: FakeKvPublisher, name: str = "e1") -> Endpoint:
    return Endpoint(
        id=name,
        url="http://127.0.0.1:1",
        model="tiny",
        kv_events_port=pub.port,
        kv_events_replay_port=pub.replay_port,
    )


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


async def connected(pub: FakeKvPublisher, index: KvBlockIndex, engine: str = "e1") -> None:
    """PUB/SUB drops what is sent before the subscription lands: probe until it arrives."""
    probe = 1 << 60
    deadline = time.monotonic() + 5
    while not index.holds(engine, probe):
        pub.publish(stored([probe]))
        await asyncio.sleep(0.05)
        assert time.monotonic() < deadline, "subscriber never connected"
    pub.publish(removed([probe]))
    await until(lambda: not index.holds(engine, probe))


@pytest.fixture
async def subscriber() -> AsyncIterator[tuple[KvEventSubscriber, KvBlockIndex]]:
    index = KvBlockIndex()
    sub = KvEventSubscriber(index, HASHER)
    await sub.start()
    yield sub, index
    await sub.stop()


@pytest.fixture
def publisher() -> AsyncIterator[FakeKvPublisher]:
    pub = FakeKvPublisher()
    yield pub  # type: ignore[misc]
    pub.close()


async def test_live_batches_update_the_index(subscriber, publisher) -> None:  # type: ignore[no-untyped-def]
    sub, index = subscriber
    sub.update([endpoint(publisher)])
    await connected(publisher, index)
    publisher.publish(stored([1, 2, 3]), removed([3]))
    await until(lambda: index.match([1, 2, 3], ["e1"]) == {"e1": 2})
    publisher.publish(cleared())
    await until(lambda: index.blocks("e1") == 0)
    assert sub.stats.lost == 0 and sub.stats.bad == 0


async def test_late_join_replays_what_the_engine_stored_before(subscriber, publisher) -> None:  # type: ignore[no-untyped-def]
    sub, index = subscriber
    publisher.publish(stored([1, 2]))  # before anyone listens
    publisher.publish(removed([2]))
    sub.update([endpoint(publisher)])
    await connected(publisher, index)
    assert index.match([1, 2], ["e1"]) == {"e1": 1}
    assert sub.stats.replayed >= 2


async def test_a_gap_is_filled_from_the_replay_buffer(subscriber, publisher) -> None:  # type: ignore[no-untyped-def]
    sub, index = subscriber
    sub.update([endpoint(publisher)])
    await connected(publisher, index)
    publisher.publish(stored([1, 2]), wire=False)  # lost on the wire, still buffered
    publisher.publish(stored([3]))
    await until(lambda: index.holds("e1", 3))
    assert index.holds("e1", 1) and index.holds("e1", 2)
    assert sub.stats.lost == 0 and sub.stats.replayed >= 1


async def test_an_unrecoverable_gap_clears_the_engine(subscriber, publisher) -> None:  # type: ignore[no-untyped-def]
    sub, index = subscriber
    sub.update([endpoint(publisher)])
    await connected(publisher, index)
    publisher.publish(stored([1, 2]))
    await until(lambda: index.holds("e1", 2))
    publisher.publish(removed([2]), wire=False, buffer=False)  # gone for good
    publisher.publish(stored([5]))
    await until(lambda: index.holds("e1", 5))
    # Block 2's removal was missed: keeping 1 and 2 could promise what the engine lost.
    assert not index.holds("e1", 1) and not index.holds("e1", 2)
    assert sub.stats.lost == 1 and sub.stats.resets["gap"] == 1


async def test_a_gap_without_replay_socket_clears_the_engine(subscriber) -> None:  # type: ignore[no-untyped-def]
    sub, index = subscriber
    pub = FakeKvPublisher(replay=False)
    try:
        sub.update([endpoint(pub)])
        await connected(pub, index)
        pub.publish(stored([1]))
        await until(lambda: index.holds("e1", 1))
        pub.publish(stored([2]), wire=False)
        pub.publish(stored([3]))
        await until(lambda: index.holds("e1", 3))
        assert not index.holds("e1", 1) and not index.holds("e1", 2)
    finally:
        pub.close()


async def test_numbering_that_starts_over_is_a_restart(subscriber, publisher) -> None:  # type: ignore[no-untyped-def]
    sub, index = subscriber
    sub.update([endpoint(publisher)])
    await connected(publisher, index)
    publisher.publish(stored([1, 2, 3]))
    await until(lambda: index.holds("e1", 3))
    publisher.restart_numbering()
    publisher.publish(stored([7]))
    await until(lambda: index.holds("e1", 7))
    assert index.blocks("e1") == 1  # the old process's blocks are gone
    assert sub.stats.resets["restarted"] == 1


async def test_a_dropped_connection_clears_the_engine(subscriber, publisher) -> None:  # type: ignore[no-untyped-def]
    sub, index = subscriber
    sub.update([endpoint(publisher)])
    await connected(publisher, index)
    publisher.publish(stored([1, 2]))
    await until(lambda: index.holds("e1", 2))
    publisher.close()  # the engine process went away
    await until(lambda: index.blocks("e1") == 0)
    assert sub.stats.resets["disconnected"] >= 1


async def test_an_engine_that_leaves_is_forgotten(subscriber, publisher) -> None:  # type: ignore[no-untyped-def]
    sub, index = subscriber
    other = FakeKvPublisher()
    try:
        sub.update([endpoint(publisher), endpoint(other, "e2")])
        await connected(publisher, index)
        await connected(other, index, "e2")
        publisher.publish(stored([1]))
        other.publish(stored([1]))
        await until(lambda: index.match([1], ["e1", "e2"]) == {"e1": 1, "e2": 1})
        sub.update([endpoint(other, "e2")])
        assert index.engines() == ["e2"] and sub.following() == ["e2"]
    finally:
        other.close()


async def test_hashes_unlike_ours_are_counted(subscriber, publisher) -> None:  # type: ignore[no-untyped-def]
    sub, index = subscriber
    sub.update([endpoint(publisher)])
    await connected(publisher, index)
    (good,) = HASHER.hashes("tiny", [1, 2, 3, 4])
    publisher.publish(stored([good], tokens=[1, 2, 3, 4]))
    publisher.publish(stored([good + 1], tokens=[5, 6, 7, 8]))
    await until(lambda: sub.stats.hash_checks == 2)
    assert sub.stats.hash_mismatches == 1
