"""Engine -> cached KV blocks, from the engines' events, in bounded memory. Pure.

Each block key (a 64-bit event hash) maps to a bitmask of the engines holding it, so the
longest cached prefix of a prompt on every candidate is one walk down the prompt's block keys
(vLLM's own prefix lookup also stops at the first block it does not hold).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pdrouter.kvcache.events import AllBlocksCleared, BlockRemoved, BlockStored, KvEvent


class _Engine:
    __slots__ = ("bit", "blocks")

    def __init__(self, bit: int) -> None:
        self.bit = bit
        # Ordered by the last store: the oldest go first when the engine is over its bound.
        self.blocks: dict[int, None] = {}


class KvBlockIndex:
    """Which engine holds which blocks. At most `max_blocks_per_engine` keys per engine (the
    oldest stores are forgotten first; counted in `evicted`)."""

    def __init__(self, max_blocks_per_engine: int = 65_536) -> None:
        self.max_blocks_per_engine = max_blocks_per_engine
        self._engines: dict[str, _Engine] = {}
        self._owners: dict[int, int] = {}  # block key -> bitmask of engines
        self._free_bits: list[int] = []
        self._next_bit = 0
        self.evicted = 0

    # --- updates --------------------------------------------------------------------------
    def _engine(self, engine_id: str) -> _Engine:
        engine = self._engines.get(engine_id)
        if engine is None:
            if self._free_bits:
                bit = self._free_bits.pop()
            else:
                bit, self._next_bit = self._next_bit, self._next_bit + 1
            engine = self._engines[engine_id] = _Engine(bit)
        return engine

    def store(self, engine_id: str, keys: Iterable[int]) -> None:
        engine = self._engine(engine_id)
        mask = 1 << engine.bit
        owners, blocks = self._owners, engine.blocks
        for key in keys:
            if key in blocks:
                del blocks[key]  # re-stored: refresh its place in the eviction order
            blocks[key] = None
            owners[key] = owners.get(key, 0) | mask
        excess = len(blocks) - self.max_blocks_per_engine
        if excess > 0:
            oldest = [k for k, _ in zip(blocks, range(excess), strict=False)]
            self._forget(engine, oldest)
            self.evicted += len(oldest)

    def remove(self, engine_id: str, keys: Iterable[int]) -> None:
        engine = self._engines.get(engine_id)
        if engine is not None:
            self._forget(engine, [k for k in keys if k in engine.blocks])

    def _forget(self, engine: _Engine, keys: Iterable[int]) -> None:
        keep = ~(1 << engine.bit)
        owners, blocks = self._owners, engine.blocks
        for key in keys:
            del blocks[key]
            rest = owners[key] & keep
            if rest:
                owners[key] = rest
            else:
                del owners[key]

    def clear(self, engine_id: str) -> None:
        """The engine holds nothing (AllBlocksCleared, a restart, an unrecoverable gap)."""
        engine = self._engines.get(engine_id)
        if engine is not None:
            self._forget(engine, list(engine.blocks))

    def drop(self, engine_id: str) -> None:
        """The engine left: forget it and free its slot."""
        self.clear(engine_id)
        engine = self._engines.pop(engine_id, None)
        if engine is not None:
            self._free_bits.append(engine.bit)

    def apply(self, engine_id: str, events: Iterable[KvEvent]) -> None:
        for event in events:
            if isinstance(event, BlockStored):
                self.store(engine_id, event.block_hashes)
            elif isinstance(event, BlockRemoved):
                self.remove(engine_id, event.block_hashes)
            elif isinstance(event, AllBlocksCleared):
                self.clear(engine_id)

    # --- queries --------------------------------------------------------------------------
    def __len__(self) -> int:
        """Distinct block keys held by any engine."""
        return len(self._owners)

    def blocks(self, engine_id: str) -> int:
        engine = self._engines.get(engine_id)
        return len(engine.blocks) if engine is not None else 0

    def engines(self) -> list[str]:
        return list(self._engines)

    def keys(self, engine_id: str) -> list[int]:
        """The engine's block keys, oldest store first."""
        engine = self._engines.get(engine_id)
        return list(engine.blocks) if engine is not None else []

    def __contains__(self, key: int) -> bool:
        """Does any engine hold this block?"""
        return key in self._owners

    def holds(self, engine_id: str, key: int) -> bool:
        engine = self._engines.get(engine_id)
        return engine is not None and key in engine.blocks

    def match(self, keys: Sequence[int], engine_ids: Iterable[str]) -> dict[str, int]:
        """For each engine, how many leading blocks of `keys` it holds."""
        result: dict[str, int] = {}
        by_bit: dict[int, str] = {}
        alive = 0
        for engine_id in engine_ids:
            engine = self._engines.get(engine_id)
            result[engine_id] = 0
            if engine is not None and engine.blocks:
                alive |= 1 << engine.bit
                by_bit[engine.bit] = engine_id
        owners = self._owners
        depth = 0
        for key in keys:
            if not alive:
                break
            held = owners.get(key, 0) & alive
            if held != alive:
                for bit in _bits(alive & ~held):
                    result[by_bit[bit]] = depth
                alive = held
            depth += 1
        for bit in _bits(alive):
            result[by_bit[bit]] = depth
        return result


def _bits(mask: int) -> Iterable[int]:
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low
