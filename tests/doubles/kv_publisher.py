"""A KV-event publisher speaking vLLM's wire protocol (test double), for fault injection.

vLLM's `ZmqEventPublisher`: PUB frames (topic, 8-byte big-endian sequence, msgpack batch);
a ROUTER answers [identity, b"", start_seq] with every buffered batch from that sequence as
[identity, b"", topic, seq, payload], then [identity, b"", b"", -1, b""]. This double adds
knobs real engines lack: skip publishing a batch (a gap on the wire, still replayable), drop
it from the replay buffer too, restart the numbering. Real engines are exercised in
tests/e2e/test_kv_events.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import msgspec
import zmq

END = (-1).to_bytes(8, "big", signed=True)


def stored(keys: Sequence[int], tokens: Sequence[int] = (), parent: int | None = None) -> Any:
    block = len(tokens) // len(keys) if keys and tokens else 16
    return {
        "type": "BlockStored",
        "block_hashes": list(keys),
        "parent_block_hash": parent,
        "token_ids": list(tokens),
        "block_size": block,
        "lora_id": None,
        "medium": "GPU",
        "lora_name": None,
    }


def removed(keys: Sequence[int]) -> Any:
    return {"type": "BlockRemoved", "block_hashes": list(keys), "medium": "GPU"}


def cleared() -> Any:
    return {"type": "AllBlocksCleared"}


class FakeKvPublisher:
    """PUB + replay ROUTER on loopback ports of its own; a thread serves replays."""

    def __init__(self, replay: bool = True) -> None:
        self.ctx = zmq.Context()
        self.pub = self.ctx.socket(zmq.PUB)
        self.port = self.pub.bind_to_random_port("tcp://127.0.0.1")
        self.router: zmq.Socket[bytes] | None = None
        self.replay_port: int | None = None
        if replay:
            self.router = self.ctx.socket(zmq.ROUTER)
            self.replay_port = self.router.bind_to_random_port("tcp://127.0.0.1")
        self.seq = 0
        self.buffer: list[tuple[int, bytes]] = []
        self.replays = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve_replays, daemon=True)
        self._thread.start()

    def publish(self, *events: Any, wire: bool = True, buffer: bool = True) -> int:
        """Publish one batch; `wire=False` skips the PUB send (a gap), `buffer=False` also
        keeps it from the replay buffer (a gap nothing can fill). Returns its sequence."""
        payload = msgspec.msgpack.encode([time.time(), list(events), 0])
        with self._lock:
            seq = self.seq
            self.seq += 1
            if buffer:
                self.buffer.append((seq, payload))
            if wire:
                self.pub.send_multipart((b"", seq.to_bytes(8, "big"), payload))
        return seq

    def restart_numbering(self) -> None:
        """What a restarted engine looks like on the wire: numbering from 0, empty buffer."""
        with self._lock:
            self.seq = 0
            self.buffer.clear()

    def _serve_replays(self) -> None:
        if self.router is None:
            return
        while not self._stop.is_set():
            if not self.router.poll(50):
                continue
            ident, _, start = self.router.recv_multipart()
            first = int.from_bytes(start, "big")
            with self._lock:
                self.replays += 1
                for seq, payload in self.buffer:
                    if seq >= first:
                        self.router.send_multipart(
                            (ident, b"", b"", seq.to_bytes(8, "big"), payload)
                        )
                self.router.send_multipart((ident, b"", b"", END, b""))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.pub.close(0)
        if self.router is not None:
            self.router.close(0)
        self.ctx.term()
