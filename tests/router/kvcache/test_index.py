from pdrouter.kvcache.events import AllBlocksCleared, BlockRemoved, BlockStored
from pdrouter.kvcache.index import KvBlockIndex


def test_longest_prefix_stops_at_the_first_missing_block() -> None:
    index = KvBlockIndex()
    index.store("a", [1, 2, 3, 4])
    index.store("b", [1, 2, 9])
    index.store("c", [2, 3, 4])  # holds later blocks but not the first: useless, like in vLLM
    assert index.match([1, 2, 3, 4, 5], ["a", "b", "c", "unknown"]) == {
        "a": 4,
        "b": 2,
        "c": 0,
        "unknown": 0,
    }
    assert index.match([], ["a"]) == {"a": 0}


def test_events_store_remove_and_clear() -> None:
    index = KvBlockIndex()
    index.apply("a", [BlockStored((1, 2, 3), None, [], 16), BlockRemoved((2,))])
    assert index.match([1, 2, 3], ["a"]) == {"a": 1}
    index.apply("b", [BlockStored((1, 2), None, [], 16)])
    index.apply("a", [AllBlocksCleared()])
    assert index.blocks("a") == 0
    assert index.match([1, 2], ["a", "b"]) == {"a": 0, "b": 2}
    assert len(index) == 2  # b's keys remain


def test_memory_is_bounded_per_engine_oldest_first() -> None:
    index = KvBlockIndex(max_blocks_per_engine=100)
    index.store("a", range(1000))
    assert index.blocks("a") == 100 and index.evicted == 900
    assert index.holds("a", 999) and not index.holds("a", 0)
    index.store("a", [950])  # re-storing refreshes a block's place
    index.store("a", range(2000, 2099))
    assert index.holds("a", 950) and not index.holds("a", 951)


def test_a_leaving_engine_frees_its_slot() -> None:
    index = KvBlockIndex()
    for n in range(200):  # engines come and go; bit slots are reused
        index.store(f"e{n}", [n, 10_000])
        index.drop(f"e{n}")
    index.store("x", [1])
    assert len(index) == 1 and index.engines() == ["x"]
    assert index.match([1], ["x"]) == {"x": 1}
