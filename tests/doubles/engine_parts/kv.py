"""KV-transfer emulation: NIXL-style held KV with a lease, and LMCache ProxyNotif pushes.

NIXL: a prefill holds the prompt tokens under a fresh ``remote_request_id``; the decode pulls
them over HTTP from the prefill fake (``GET /admin/kv/<id>?engine_id=...``), which releases
them, like a real NIXL read frees the prefiller's blocks.

LMCache native PD: after the prefill, each TP rank PUSHes ``ProxyNotif(req_id)`` to the proxy's
ZMQ PULL socket. The encoding mimics LMCache exactly (source read for facts only:
LMCache/LMCache ``lmcache/v1/storage_backend/pd_backend.py``): ``class PDMsgBase(msgspec.Struct,
tag=True)``, ``class ProxyNotif(PDMsgBase): req_id: str``, sent as
``msgspec.msgpack.encode(ProxyNotif(req_id=...))`` on a PUSH socket connected to
``tcp://<pd_proxy_host>:<pd_proxy_port>``. With ``tag=True`` the message is the msgpack map
``{"type": "ProxyNotif", "req_id": "<id>"}``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass
from typing import Any

import msgspec
import zmq
import zmq.asyncio

log = logging.getLogger("fake_engine.kv")


class PDMsgBase(msgspec.Struct, tag=True):
    """Same tagging as LMCache's PD message base class."""


class ProxyNotif(PDMsgBase):
    """LMCache's "KV of this request is ready on the decoder" notification."""

    req_id: str


def encode_proxy_notif(req_id: str) -> bytes:
    return msgspec.msgpack.encode(ProxyNotif(req_id=req_id))


def decode_proxy_notif(data: bytes) -> str:
    """Decode a ProxyNotif the way LMCache's proxy does; returns its req_id."""
    return msgspec.msgpack.decode(data, type=ProxyNotif).req_id


@dataclass
class HeldKv:
    tokens: list[int]
    expires_at: float


class KvPullError(Exception):
    """The decode could not load the remote KV (unknown, expired, mismatched, unreachable)."""


class NixlKvStore:
    """Prefill side: KV held for remote decodes, each under a lease."""

    def __init__(self) -> None:
        self._held: dict[str, HeldKv] = {}
        self._block_ids = itertools.count(1)
        self.expired = 0

    def hold(self, rid: str, tokens: list[int], lease_s: float, block_size: int) -> list[int]:
        self._sweep()
        self._held[rid] = HeldKv(tokens, time.monotonic() + lease_s)
        nblocks = max(1, -(-len(tokens) // block_size))
        return [next(self._block_ids) for _ in range(nblocks)]

    def pull(self, rid: str) -> list[int] | None:
        """Release and return the tokens, or None when unknown or expired."""
        self._sweep()
        held = self._held.pop(rid, None)
        return None if held is None else held.tokens

    def held_count(self) -> int:
        self._sweep()
        return len(self._held)

    def clear(self) -> None:
        self._held.clear()

    def _sweep(self) -> None:
        now = time.monotonic()
        for rid in [r for r, h in self._held.items() if h.expires_at <= now]:
            del self._held[rid]
            self.expired += 1


class LmcacheNotifier:
    """Prefill side of LMCache native PD: PUSH one ProxyNotif per TP rank to the proxy."""

    def __init__(self) -> None:
        self._ctx = zmq.asyncio.Context()
        self._sockets: dict[str, zmq.asyncio.Socket] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent = 0

    def schedule(self, url: str, req_id: str, ranks: int, delay_s: float) -> None:
        task = asyncio.get_running_loop().create_task(self._send(url, req_id, ranks, delay_s))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, url: str, req_id: str, ranks: int, delay_s: float) -> None:
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        sock = self._sockets.get(url)
        if sock is None:
            sock = self._ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(url)
            self._sockets[url] = sock
        msg = encode_proxy_notif(req_id)
        for _ in range(ranks):  # one message per TP rank, as each rank's backend sends its own
            await sock.send(msg)
            self.sent += 1

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for sock in self._sockets.values():
            sock.close(linger=0)
        self._ctx.term()


def nixl_params(
    *,
    block_ids: list[int],
    engine_id: str,
    remote_request_id: str,
    host: str,
    port: int,
    tp_size: int,
    num_tokens: int,
    lease_s: float,
) -> dict[str, Any]:
    """The prefill response's ``kv_transfer_params``, shaped like vLLM's NixlConnector."""
    return {
        "do_remote_prefill": True,
        "do_remote_decode": False,
        "remote_block_ids": [block_ids],
        "remote_engine_id": engine_id,
        "remote_request_id": remote_request_id,
        "remote_host": host,
        "remote_port": port,
        "tp_size": tp_size,
        "dcp_size": 1,
        "pp_size": 1,
        "remote_num_tokens": num_tokens,
        "remote_blocks_expiry_time": time.time() + lease_s,
        "transfer_mode": "pull",
    }
