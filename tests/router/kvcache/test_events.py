import msgspec
import pytest
from pdrouter.kvcache.events import (
    AllBlocksCleared,
    BadBatch,
    BlockRemoved,
    BlockStored,
    decode_batch,
)

pack = msgspec.msgpack.encode


def test_map_form_of_current_vllm() -> None:
    batch = pack(
        [
            1.5,
            [
                {"type": "BlockStored", "block_hashes": [7, 8], "parent_block_hash": None,
                 "token_ids": list(range(32)), "block_size": 16, "lora_id": None,
                 "medium": "GPU", "lora_name": None},
                {"type": "BlockRemoved", "block_hashes": [7], "medium": "GPU"},
                {"type": "AllBlocksCleared"},
                {"type": "BlockStored", "block_hashes": [9], "parent_block_hash": None,
                 "token_ids": [], "block_size": 16, "medium": "CPU"},
            ],
            0,
        ]
    )  # fmt: skip
    decoded = decode_batch(batch)
    assert decoded.events == (
        BlockStored((7, 8), None, list(range(32)), 16),
        BlockRemoved((7,)),
        AllBlocksCleared(),
    )
    assert decoded.ignored == 1  # the CPU-tier store is not the engine's own cache


def test_array_form_and_byte_hashes() -> None:
    digest = bytes(range(32))
    batch = pack(
        [0.0, [["BlockStored", [digest], 5, [1, 2], 2, None, "GPU"], ["BlockRemoved", [3], None]]]
    )
    stored, removed = decode_batch(batch).events
    assert stored == BlockStored((int.from_bytes(digest[-8:], "big"),), 5, [1, 2], 2)
    assert removed == BlockRemoved((3,))


@pytest.mark.parametrize(
    "payload", [b"\xc1", pack({"a": 1}), pack([1.0, [["BlockStored", ["x"]]]])]
)
def test_garbage_is_a_bad_batch(payload: bytes) -> None:
    with pytest.raises(BadBatch):
        decode_batch(payload)
