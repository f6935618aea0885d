"""Block hashing. That it equals vLLM's own is checked against vLLM's code in
tests/e2e/test_kv_events.py; here: the CBOR encoding against RFC 8949's examples."""

import pytest
from pdrouter.config import KvHashAlgo
from pdrouter.kvcache.hashing import BlockHasher, cbor


@pytest.mark.parametrize(
    ("value", "encoded"),
    [  # RFC 8949 appendix A
        (0, "00"),
        (23, "17"),
        (24, "1818"),
        (1000, "1903e8"),
        (1000000, "1a000f4240"),
        (18446744073709551615, "1bffffffffffffffff"),
        (None, "f6"),
        (b"\x01\x02\x03\x04", "4401020304"),
        ("IETF", "6449455446"),
        ([1, [2, 3], [4, 5]], "8301820203820405"),
    ],
)
def test_canonical_cbor(value: object, encoded: str) -> None:
    assert cbor(value).hex() == encoded


def test_hashes_chain_over_full_blocks_only() -> None:
    hasher = BlockHasher(KvHashAlgo.SHA256, block_size=4, seed="0")
    tokens = list(range(10))
    keys = hasher.hashes("tiny", tokens)
    assert len(keys) == 2  # the last 2 tokens do not fill a block
    assert hasher.hashes("tiny", tokens[:8]) == keys
    # A different first block changes every later key (the chain), and so does the seed.
    assert hasher.hashes("tiny", [99, *tokens[1:]])[1] != keys[1]
    assert BlockHasher(KvHashAlgo.SHA256, 4, seed="1").hashes("tiny", tokens) != keys


def test_verify_recognises_its_own_first_block() -> None:
    hasher = BlockHasher(KvHashAlgo.SHA256_CBOR, block_size=4)
    (key,) = hasher.hashes("tiny", [1, 2, 3, 4])
    assert hasher.verify("tiny", None, [1, 2, 3, 4], key) is True
    assert hasher.verify("tiny", None, [1, 2, 3, 5], key) is False
    assert hasher.verify("tiny", 123, [1, 2, 3, 4], key) is None  # parent unknowable
