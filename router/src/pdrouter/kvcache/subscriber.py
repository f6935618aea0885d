"""Follow every engine's KV-event stream (ZMQ) and feed what it says to a sink.

vLLM's publisher sends multipart messages (topic, 8-byte big-endian sequence number, msgpack
batch) on a PUB socket and keeps its last batches for a ROUTER socket that replays them from a
requested sequence number, ending with sequence -1. So, per engine:

- the first batch after (re)connecting asks for a replay from 0, to learn what the engine
  stored before we listened (as far back as its buffer goes);
- a jump in the numbering is a gap: replayed if the engine still has those batches, otherwise
  the engine's entry is cleared (blocks it removed meanwhile would be wrongly kept);
- numbering that goes back, or a dropped connection, means the engine restarted: its entry is
  cleared and its history replayed.

The sink is the index itself, or (with --workers) the control plane's fan-out to the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from pdrouter.config import RouterSettings, RoutingLogic
from pdrouter.discovery.endpoint import Endpoint, Role
from pdrouter.kvcache.events import BadBatch, BlockStored, KvEvent, decode_batch
from pdrouter.kvcache.hashing import BlockHasher

log = logging.getLogger(__name__)

END_OF_REPLAY = 0xFFFFFFFFFFFFFFFF  # the replay socket's end marker: sequence -1
REPLAY_TIMEOUT_S = 2.0
# Hash checks (is the router configured like the engine?): the first few verifiable batches
# of a stream, then one batch in this many, so a misconfiguration shows at once for little CPU.
CHECKS_AT_START = 8
CHECK_EVERY = 64


class KvSink(Protocol):
    """Where decoded events go (`KvBlockIndex` is one)."""

    def apply(self, engine_id: str, events: Sequence[KvEvent]) -> None: ...

    def clear(self, engine_id: str) -> None: ...

    def drop(self, engine_id: str) -> None: ...


@dataclass
class StreamStats:
    """Counters of all streams, read by the metrics collector."""

    batches: int = 0
    events: int = 0
    ignored: int = 0  # other media or groups
    bad: int = 0  # undecodable batches
    replayed: int = 0  # batches recovered through the replay socket
    lost: int = 0  # batches missed for good (the entry was cleared)
    resets: dict[str, int] = field(default_factory=dict)  # reason -> engine entries cleared
    hash_checks: int = 0
    hash_mismatches: int = 0

    def reset(self, reason: str) -> None:
        self.resets[reason] = self.resets.get(reason, 0) + 1


def zmq_endpoint(host: str, port: int) -> str:
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


class EngineStream:
    """One engine's stream: a SUB socket, a DEALER for replays, a monitor for disconnects."""

    def __init__(
        self,
        endpoint: Endpoint,
        sink: KvSink,
        hasher: BlockHasher,
        stats: StreamStats,
        ctx: zmq.asyncio.Context,
    ) -> None:
        assert endpoint.kv_events_port is not None
        self.endpoint = endpoint
        self.engine_id = endpoint.id
        self.sink = sink
        self.hasher = hasher
        self.stats = stats
        self.ctx = ctx
        self.pub = zmq_endpoint(endpoint.host, endpoint.kv_events_port)
        port = endpoint.kv_events_replay_port
        self.replay = zmq_endpoint(endpoint.host, port) if port else None
        self.last: int | None = None  # last applied sequence number; None: (re)joining
        self._warned: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._batches = 0
        self._checked = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"kv-events:{self.engine_id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        sub = self.ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.IPV6, 1)
        monitor = sub.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        sub.connect(self.pub)
        watch = asyncio.create_task(self._watch(monitor))
        try:
            while True:
                frames = await sub.recv_multipart()
                if len(frames) != 3 or len(frames[1]) != 8:
                    self.stats.bad += 1
                    continue
                await self._on_batch(int.from_bytes(frames[1], "big"), frames[2])
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
            sub.disable_monitor()
            monitor.close(0)
            sub.close(0)

    async def _watch(self, monitor: zmq.asyncio.Socket) -> None:
        """A dropped connection: the engine (or the path to it) went away; what it held may be
        gone. Forget it; the next batch replays what it still has."""
        while True:
            event = parse_monitor_message(await monitor.recv_multipart())
            if event["event"] == zmq.EVENT_DISCONNECTED:
                self._reset("disconnected")

    def _reset(self, reason: str) -> None:
        self.sink.clear(self.engine_id)
        self.stats.reset(reason)
        self.last = None
        log.info("kv events: %s %s; its entry was cleared", self.endpoint.display_name, reason)

    async def _on_batch(self, seq: int, payload: bytes) -> None:
        last = self.last
        if last is not None and seq <= last:
            self._reset("restarted")  # the publisher's numbering started over
            last = None
        if last is None:
            if self.replay is not None and seq > 0:
                await self._replay(0, seq)
        elif seq > last + 1:
            await self._replay(last + 1, seq)
            if self.last is not None and self.last + 1 < seq:
                self.stats.lost += seq - 1 - self.last
                self._reset("gap")
        if self.last is None or seq > self.last:
            self._apply(payload)
            self.last = seq

    async def _replay(self, start: int, until: int) -> None:
        """Apply the engine's buffered batches from `start` up to (not incl.) `until`."""
        if self.replay is None:
            return
        dealer = self.ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.IPV6, 1)
        dealer.connect(self.replay)
        try:
            async with asyncio.timeout(REPLAY_TIMEOUT_S):
                await dealer.send_multipart((b"", start.to_bytes(8, "big")))
                while True:
                    frames = await dealer.recv_multipart()
                    if len(frames) != 4:
                        self.stats.bad += 1
                        continue
                    seq = int.from_bytes(frames[2], "big")
                    if seq == END_OF_REPLAY:
                        break
                    if seq >= until:
                        continue  # the live stream brings these
                    if self.last is not None and seq != self.last + 1:
                        continue  # not contiguous with what we applied
                    if self.last is None and seq != start:
                        self.last = seq - 1  # joined late: older batches left the buffer
                    self._apply(frames[3])
                    self.last = seq
                    self.stats.replayed += 1
        except TimeoutError:
            log.warning("kv events: replay from %s timed out", self.endpoint.display_name)
        finally:
            dealer.close(0)

    def _apply(self, payload: bytes) -> None:
        try:
            batch = decode_batch(payload)
        except BadBatch as exc:
            self.stats.bad += 1
            self._warn("bad", "undecodable KV-event batch (%s)", exc)
            return
        self.stats.batches += 1
        self.stats.events += len(batch.events)
        self.stats.ignored += batch.ignored
        self._batches += 1
        if self._checked < CHECKS_AT_START or self._batches % CHECK_EVERY == 0:
            for event in batch.events:
                if isinstance(event, BlockStored) and event.block_hashes:
                    self._check(event)
                    break
        self.sink.apply(self.engine_id, batch.events)

    def _check(self, event: BlockStored) -> None:
        """Do the engine's block hashes match ours? If not, its prefix scores are blind."""
        if event.block_size != self.hasher.block_size:
            self._warn(
                "size",
                "publishes blocks of %d tokens but --kv-block-size is %d",
                event.block_size,
                self.hasher.block_size,
            )
            return
        ok = self.hasher.verify(
            self.endpoint.model, event.parent, event.token_ids, event.block_hashes[0]
        )
        if ok is None:
            return
        self._checked += 1
        self.stats.hash_checks += 1
        if not ok:
            self.stats.hash_mismatches += 1
            self._warn(
                "hash",
                "hashes blocks differently from --kv-hash-algo %s --kv-hash-seed %r: "
                "set them to the engines' --prefix-caching-hash-algo and PYTHONHASHSEED",
                self.hasher.algo.value,
                self.hasher.seed,
            )

    def _warn(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("kv events: engine %s " + message, self.endpoint.display_name, *args)


def followed_roles(settings: RouterSettings) -> frozenset[Role]:
    """Engines whose caches scheduling reads. In PD only prefill engines are scored on their
    prefix, unless the decider looks at what the decoder holds (--pd-min-uncached-tokens):
    following the decoders too would double the events for nothing."""
    pd = settings.routing_logic is RoutingLogic.DISAGG_PREFILL
    if pd and not settings.pd_min_uncached_tokens:
        return frozenset({Role.PREFILL, Role.BOTH})
    return frozenset(Role)


class KvEventSubscriber:
    """One EngineStream per engine (of the followed roles) that publishes KV events,
    following discovery."""

    def __init__(
        self, sink: KvSink, hasher: BlockHasher, roles: frozenset[Role] = frozenset(Role)
    ) -> None:
        self.sink = sink
        self.hasher = hasher
        self.roles = roles
        self.stats = StreamStats()
        self._ctx: zmq.asyncio.Context | None = None
        self._streams: dict[str, EngineStream] = {}
        self._stopping: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._ctx = zmq.asyncio.Context()

    async def stop(self) -> None:
        for stream in self._streams.values():
            await stream.stop()
        self._streams.clear()
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    def update(self, endpoints: Iterable[Endpoint]) -> None:
        """Follow the engines that publish events; forget those that left or changed."""
        assert self._ctx is not None, "start() first"
        wanted = {e.id: e for e in endpoints if e.kv_events_port and e.role in self.roles}
        for engine_id in list(self._streams):
            stream = self._streams[engine_id]
            if wanted.get(engine_id) != stream.endpoint:
                del self._streams[engine_id]
                task = asyncio.create_task(stream.stop())
                self._stopping.add(task)
                task.add_done_callback(self._stopping.discard)
                self.sink.drop(engine_id)
                self.stats.reset("left")
        for engine_id, endpoint in wanted.items():
            if engine_id not in self._streams:
                stream = EngineStream(endpoint, self.sink, self.hasher, self.stats, self._ctx)
                self._streams[engine_id] = stream
                stream.start()

    def following(self) -> list[str]:
        return sorted(self._streams)
