"""KV events with --workers: the control plane follows the engines' streams once and feeds
the same ordered operations to every worker's index, so all workers (and a worker that
restarts, through a snapshot on connect) score prefixes from the same view.

Messages (JSON lines on the control socket): {"t": "kv", "e": engine_id, "ops": [...]} with
ops ["s", [keys]] (stored), ["r", [keys]] (removed), ["c"] (cleared), ["d"] (engine left);
and {"t": "kvstats", ...} with the streams' counters for /metrics.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from pdrouter.kvcache.events import AllBlocksCleared, BlockRemoved, BlockStored, KvEvent
from pdrouter.kvcache.index import KvBlockIndex
from pdrouter.kvcache.subscriber import StreamStats
from pdrouter.workers.protocol import encode


def _ops(events: Sequence[KvEvent]) -> list[list[Any]]:
    ops: list[list[Any]] = []
    for event in events:
        if isinstance(event, BlockStored):
            ops.append(["s", list(event.block_hashes)])
        elif isinstance(event, BlockRemoved):
            ops.append(["r", list(event.block_hashes)])
        elif isinstance(event, AllBlocksCleared):
            ops.append(["c"])
    return ops


class KvFanout:
    """The control plane's KV sink: keeps its own index (for snapshots) and broadcasts."""

    def __init__(self, index: KvBlockIndex, broadcast: Callable[[bytes], None]) -> None:
        self.index = index
        self._broadcast = broadcast

    def _send(self, engine_id: str, ops: list[list[Any]]) -> None:
        if ops:
            self._broadcast(encode({"t": "kv", "e": engine_id, "ops": ops}))

    def apply(self, engine_id: str, events: Sequence[KvEvent]) -> None:
        self.index.apply(engine_id, events)
        self._send(engine_id, _ops(events))

    def clear(self, engine_id: str) -> None:
        self.index.clear(engine_id)
        self._send(engine_id, [["c"]])

    def drop(self, engine_id: str) -> None:
        self.index.drop(engine_id)
        self._send(engine_id, [["d"]])

    def snapshot(self) -> bytes:
        """Everything a newly connected worker needs to catch up."""
        return b"".join(
            encode({"t": "kv", "e": e, "ops": [["c"], ["s", self.index.keys(e)]]})
            for e in self.index.engines()
        )


def stats_message(stats: StreamStats) -> bytes:
    return encode({"t": "kvstats", **dataclasses.asdict(stats)})


def apply_message(index: KvBlockIndex, stats: StreamStats, message: dict[str, Any]) -> bool:
    """Apply a kv or kvstats message in a worker; False if it is not one."""
    kind = message.get("t")
    if kind == "kvstats":
        for name, value in message.items():
            if name != "t" and hasattr(stats, name):
                setattr(stats, name, value)
        return True
    if kind != "kv":
        return False
    engine_id = message["e"]
    for op in message["ops"]:
        match op[0]:
            case "s":
                index.store(engine_id, op[1])
            case "r":
                index.remove(engine_id, op[1])
            case "c":
                index.clear(engine_id)
            case "d":
                index.drop(engine_id)
    return True
