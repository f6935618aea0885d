"""An independent KV-event subscriber for the tests: the router package's own subscriber and
index, run on a loop in a thread of the test process (a second listener, like a second router
replica), queried from the test's thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from pdrouter.config import KvHashAlgo
from pdrouter.discovery.endpoint import Endpoint
from pdrouter.kvcache.hashing import BlockHasher
from pdrouter.kvcache.index import KvBlockIndex
from pdrouter.kvcache.subscriber import KvEventSubscriber

T = TypeVar("T")


class KvWatch:
    """Follows the given engines' event streams into an index of its own."""

    def __init__(self, endpoints: Sequence[Endpoint], hasher: BlockHasher) -> None:
        self.index = KvBlockIndex()
        self.hasher = hasher
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.subscriber = KvEventSubscriber(self.index, hasher)
        self._call(self.subscriber.start())
        self.run(lambda: self.subscriber.update(endpoints))

    def _call(self, coro: object) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)  # type: ignore[arg-type]

    def run(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the subscriber's loop (the index is not shared across threads)."""

        async def call() -> T:
            return fn()

        return self._call(call())  # type: ignore[return-value]

    def held(self, engine_id: str, keys: Sequence[int]) -> int:
        return self.run(lambda: self.index.match(keys, [engine_id])[engine_id])

    def blocks(self, engine_id: str) -> int:
        return self.run(lambda: self.index.blocks(engine_id))

    def wait(self, check: Callable[[], bool], timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def close(self) -> None:
        self._call(self.subscriber.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def vllm_hasher(block_size: int) -> BlockHasher:
    """How the e2e vLLM engines hash blocks: sha256 (the default), no PYTHONHASHSEED."""
    return BlockHasher(KvHashAlgo.SHA256, block_size, None)
