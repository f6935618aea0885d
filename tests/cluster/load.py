"""Streaming clients that keep a router busy while a test changes the cluster under it."""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx

from tests.faults.stack import call, request_body


class StreamLoad:
    """`workers` clients sending streamed chat and completion requests back to back; each
    outcome is kept as "<status> <error code>" (a transport error by its exception name)."""

    def __init__(self, url: str, workers: int = 4, max_tokens: int = 60) -> None:
        self.url = url
        self.max_tokens = max_tokens
        self.outcomes: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def _run(self, worker: int) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            api = "chat" if (n + worker) % 2 else "completions"
            body = request_body(api=api, stream=True, max_tokens=self.max_tokens, tag=f"w{worker}")
            try:
                answer = call(self.url, body, api=api, timeout=60)
                outcome = f"{answer.status} {answer.error_code or ''}".strip()
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            with self._lock:
                self.outcomes.append((time.monotonic(), outcome))

    def counts(self, since: float = 0.0) -> Counter[str]:
        with self._lock:
            return Counter(o for t, o in self.outcomes if t >= since)

    def wait_for_requests(self, count: int, since: float, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while sum(self.counts(since).values()) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {self.counts(since)} since the mark")
            time.sleep(0.2)

    def stop(self) -> Counter[str]:
        self._stop.set()
        for thread in self._threads:
            thread.join(90)
        return self.counts()
