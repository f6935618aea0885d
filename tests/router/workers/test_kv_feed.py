"""--workers: the control plane's KV fan-out keeps every worker's index equal to its own,
including a worker that connects late (a snapshot first)."""

import orjson
from pdrouter.kvcache.events import AllBlocksCleared, BlockRemoved, BlockStored
from pdrouter.kvcache.index import KvBlockIndex
from pdrouter.kvcache.subscriber import StreamStats
from pdrouter.workers.kv_feed import KvFanout, apply_message, stats_message


def feed(index: KvBlockIndex, stats: StreamStats, wire: bytes) -> None:
    for line in wire.splitlines():
        assert apply_message(index, stats, orjson.loads(line))


def test_workers_mirror_the_control_planes_index() -> None:
    sent: list[bytes] = []
    plane = KvFanout(KvBlockIndex(), sent.append)
    early, stats = KvBlockIndex(), StreamStats()
    plane.apply("a", [BlockStored((1, 2, 3), None, [], 16), BlockRemoved((3,))])
    plane.apply("b", [BlockStored((1, 9), None, [], 16)])
    plane.apply("b", [AllBlocksCleared()])
    plane.apply("c", [BlockStored((5,), None, [], 16)])
    plane.drop("c")
    plane.clear("a")
    plane.apply("a", [BlockStored((7, 8), None, [], 16)])
    feed(early, stats, b"".join(sent))

    late = KvBlockIndex()  # a worker (re)started now
    feed(late, stats, plane.snapshot())
    for index in (early, late):
        assert index.engines() == plane.index.engines() == ["a", "b"]
        assert index.keys("a") == [7, 8] and index.blocks("b") == 0


def test_stream_counters_reach_the_workers() -> None:
    counters = StreamStats(batches=5, lost=1, resets={"gap": 1})
    mirror = StreamStats()
    assert apply_message(KvBlockIndex(), mirror, orjson.loads(stats_message(counters)))
    assert mirror == counters
    assert not apply_message(KvBlockIndex(), mirror, {"t": "stats", "engines": {}})
