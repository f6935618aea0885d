"""Decode vLLM's KV-cache event batches (msgpack) into typed events. Pure.

A batch is `[ts, [event, ...], data_parallel_rank?]`. vLLM's events are tagged msgspec
structs: maps with a "type" key in current releases, arrays `[tag, field, ...]` in older ones
and in llm-d's simulator by default; both are accepted. Block hashes are ints, or the raw
32-byte digests when VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=0; both become the low 64 bits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

_MASK64 = (1 << 64) - 1
# Positional field order of the array form, after the tag (vLLM's struct field order).
_STORED_FIELDS = ("block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id",
                  "medium", "lora_name", "extra_keys", "group_idx")  # fmt: skip
_REMOVED_FIELDS = ("block_hashes", "medium", "group_idx")
_GPU_MEDIA = (None, "GPU", "gpu")

_decoder = msgspec.msgpack.Decoder()


class BadBatch(ValueError):
    """The payload is not a KV-event batch."""


@dataclass(frozen=True, slots=True)
class BlockStored:
    block_hashes: tuple[int, ...]
    parent: int | None
    token_ids: Sequence[int]
    block_size: int


@dataclass(frozen=True, slots=True)
class BlockRemoved:
    block_hashes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class AllBlocksCleared:
    pass


KvEvent = BlockStored | BlockRemoved | AllBlocksCleared


@dataclass(frozen=True, slots=True)
class EventBatch:
    ts: float
    events: tuple[KvEvent, ...]
    ignored: int  # events of other media (CPU offload tiers), groups or unknown types


def _key(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value & _MASK64
    if isinstance(value, (bytes, bytearray)):
        return int.from_bytes(bytes(value[-8:]), "big")
    raise BadBatch(f"block hash of type {type(value).__name__}")


def _fields(raw: Any, names: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    if isinstance(raw, dict):
        tag = raw.get("type")
        return str(tag), raw
    if isinstance(raw, (list, tuple)) and raw:
        return str(raw[0]), dict(zip(names, raw[1:], strict=False))
    raise BadBatch("event is neither a map nor an array")


def _event(raw: Any) -> KvEvent | None:
    """One event, or None when it is not about the main (GPU) KV cache's first group."""
    tag = raw.get("type") if isinstance(raw, dict) else (raw[0] if raw else None)
    if tag == "BlockStored":
        _, f = _fields(raw, _STORED_FIELDS)
        if f.get("medium") not in _GPU_MEDIA or f.get("group_idx") not in (None, 0):
            return None
        parent = f.get("parent_block_hash")
        return BlockStored(
            tuple(_key(h) for h in f.get("block_hashes") or ()),
            None if parent is None else _key(parent),
            f.get("token_ids") or (),
            int(f.get("block_size") or 0),
        )
    if tag == "BlockRemoved":
        _, f = _fields(raw, _REMOVED_FIELDS)
        if f.get("medium") not in _GPU_MEDIA or f.get("group_idx") not in (None, 0):
            return None
        return BlockRemoved(tuple(_key(h) for h in f.get("block_hashes") or ()))
    if tag == "AllBlocksCleared":
        return AllBlocksCleared()
    return None


def decode_batch(payload: bytes) -> EventBatch:
    """Decode one published payload; raises BadBatch if it is not an event batch."""
    try:
        raw = _decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise BadBatch(f"not msgpack: {exc}") from None
    if not isinstance(raw, (list, tuple)) or len(raw) < 2 or not isinstance(raw[1], list):
        raise BadBatch("not a [ts, events, ...] batch")
    events: list[KvEvent] = []
    ignored = 0
    for item in raw[1]:
        try:
            event = _event(item)
        except (TypeError, ValueError, IndexError) as exc:
            raise BadBatch(f"malformed event: {exc}") from None
        if event is None:
            ignored += 1
        else:
            events.append(event)
    ts = raw[0] if isinstance(raw[0], (int, float)) else 0.0
    return EventBatch(float(ts), tuple(events), ignored)
