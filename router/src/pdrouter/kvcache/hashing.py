"""A prompt's KV-block hashes, computed the way the engines compute them.

vLLM (v1 `kv_cache_utils.hash_block_tokens`) chains one hash per full block of `block_size`
tokens: h_i = H((h_{i-1}, tuple(block_i_tokens), extra_keys)), with h_0 = NONE_HASH =
H(seed), the seed being PYTHONHASHSEED when set, else "vllm-none-hash" for the cryptographic
algorithms. H is `--prefix-caching-hash-algo`: `sha256` (pickle, the default) or `sha256_cbor`
(canonical CBOR). Events carry the low 64 bits of each hash as an int
(VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES, on by default), which is what the index keys on.

llm-d's KV-cache library (and its simulator, which publishes these as event hashes) chains
FNV-64a over canonical CBOR of [parent, tokens, extra] from a root derived from the seed and
the model name: algorithm `fnv64a_cbor`.

Text-only prompts without LoRA or cache_salt: other extra keys are not computed here.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable, Sequence

from pdrouter.config import KvHashAlgo as HashAlgo

VLLM_DEFAULT_SEED = "vllm-none-hash"
_MASK64 = (1 << 64) - 1
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3


# --- canonical CBOR for the few shapes that get hashed ---------------------------------------
def _cbor_head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes((major << 5 | n,))
    if n < 0x100:
        return bytes((major << 5 | 24, n))
    if n < 0x10000:
        return bytes((major << 5 | 25,)) + n.to_bytes(2, "big")
    if n < 0x100000000:
        return bytes((major << 5 | 26,)) + n.to_bytes(4, "big")
    return bytes((major << 5 | 27,)) + n.to_bytes(8, "big")


def cbor(value: object) -> bytes:
    """Canonical CBOR (RFC 8949 4.2.1) of None, non-negative int, bytes, str, list or tuple."""
    if value is None:
        return b"\xf6"
    if isinstance(value, int) and value >= 0:
        return _cbor_head(0, value)
    if isinstance(value, bytes):
        return _cbor_head(2, len(value)) + value
    if isinstance(value, str):
        raw = value.encode()
        return _cbor_head(3, len(raw)) + raw
    if isinstance(value, (list, tuple)):
        return _cbor_head(4, len(value)) + b"".join(cbor(v) for v in value)
    raise TypeError(f"cannot CBOR-encode {type(value).__name__}")


def _cbor_uints(values: Sequence[int]) -> bytes:
    """An array of token ids (non-negative ints), inline for the common sizes."""
    out = bytearray(_cbor_head(4, len(values)))
    for v in values:
        if v < 24:
            out.append(v)
        elif v < 0x100:
            out += b"\x18" + v.to_bytes(1, "big")
        elif v < 0x10000:
            out += b"\x19" + v.to_bytes(2, "big")
        elif v < 0x100000000:
            out += b"\x1a" + v.to_bytes(4, "big")
        else:
            out += b"\x1b" + v.to_bytes(8, "big")
    return bytes(out)


def fnv1a64(data: bytes) -> int:
    h = _FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & _MASK64
    return h


# --- one block ------------------------------------------------------------------------------
# (parent, block tokens) -> the block's full hash (bytes for vLLM, an int for FNV).
BlockFn = Callable[[object, Sequence[int]], object]


def _vllm_sha256(parent: object, tokens: Sequence[int]) -> object:
    return hashlib.sha256(
        pickle.dumps((parent, tuple(tokens), None), protocol=pickle.HIGHEST_PROTOCOL)
    ).digest()


def _vllm_sha256_cbor(parent: object, tokens: Sequence[int]) -> object:
    assert isinstance(parent, bytes)
    payload = b"\x83" + _cbor_head(2, len(parent)) + parent + _cbor_uints(tokens) + b"\xf6"
    return hashlib.sha256(payload).digest()


def _llmd_fnv(parent: object, tokens: Sequence[int]) -> object:
    assert isinstance(parent, int)
    return fnv1a64(b"\x83" + _cbor_head(0, parent) + _cbor_uints(tokens) + b"\xf6")


def to_event_hash(full: object) -> int:
    """The int an event carries for a block hash: the low 64 bits of vLLM's bytes."""
    if isinstance(full, bytes):
        return int.from_bytes(full[-8:], "big")
    assert isinstance(full, int)
    return full & _MASK64


class BlockHasher:
    """Hashes prompts into the block keys one engine configuration publishes.

    Chained hashes are memoised by (parent, block tokens) in bounded memory: conversations
    and shared system prompts repeat their leading blocks on every request.
    """

    def __init__(
        self,
        algo: HashAlgo,
        block_size: int,
        seed: str | None = None,
        memo_entries: int = 65_536,
    ) -> None:
        if block_size <= 0:
            raise ValueError("block size must be positive")
        self.algo = algo
        self.block_size = block_size
        self.seed = seed
        self.memo_entries = memo_entries
        self._memo: dict[tuple[object, tuple[int, ...]], object] = {}
        self._roots: dict[str, object] = {}
        self._block: BlockFn
        if algo is HashAlgo.SHA256:
            self._block = _vllm_sha256
        elif algo is HashAlgo.SHA256_CBOR:
            self._block = _vllm_sha256_cbor
        else:
            self._block = _llmd_fnv

    def root(self, model: str) -> object:
        """The parent of a prompt's first block (vLLM's NONE_HASH)."""
        root = self._roots.get(model)
        if root is None:
            root = self._roots[model] = self._make_root(model)
        return root

    def _make_root(self, model: str) -> object:
        if self.algo is HashAlgo.FNV64A_CBOR:
            init = fnv1a64((self.seed or "").encode())
            return fnv1a64(b"\x83" + _cbor_head(0, init) + b"\xf6" + cbor(model))
        seed = VLLM_DEFAULT_SEED if self.seed is None else self.seed
        if self.algo is HashAlgo.SHA256:
            return hashlib.sha256(pickle.dumps(seed, protocol=pickle.HIGHEST_PROTOCOL)).digest()
        return hashlib.sha256(cbor(seed)).digest()

    def block(self, parent: object, tokens: Sequence[int]) -> object:
        """One block's full hash (memoised)."""
        key = (parent, tuple(tokens))
        memo = self._memo
        full = memo.get(key)
        if full is None:
            full = self._block(parent, key[1])
            if len(memo) >= self.memo_entries:
                memo.clear()
            memo[key] = full
        return full

    def hashes(
        self, model: str, tokens: Sequence[int], held: Callable[[int], bool] | None = None
    ) -> tuple[int, ...]:
        """The event keys of the full blocks of `tokens`, in order. With `held`, stop after
        the first key it rejects: no engine can hold a longer prefix (vLLM's lookup stops at
        the first missing block too), so the rest of the prompt need not be hashed."""
        size = self.block_size
        parent = self.root(model)
        out: list[int] = []
        for start in range(0, len(tokens) - size + 1, size):
            parent = self.block(parent, tokens[start : start + size])
            key = to_event_hash(parent)
            out.append(key)
            if held is not None and not held(key):
                break
        return tuple(out)

    def verify(
        self, model: str, parent_key: int | None, tokens: Sequence[int], key: int
    ) -> bool | None:
        """Does an event's first stored block hash as we would hash it? None when we cannot
        tell: vLLM events give a parent's low 64 bits only, so only blocks that start a prompt
        (no parent) can be checked there; FNV keys are whole, so any block can."""
        if len(tokens) < self.block_size:
            return None
        fnv = self.algo is HashAlgo.FNV64A_CBOR
        if parent_key is None or (fnv and parent_key == 0):  # llm-d writes 0 for "no parent"
            parent: object = self.root(model)
        elif fnv:
            parent = parent_key
        else:
            return None
        return to_event_hash(self.block(parent, tokens[: self.block_size])) == key
