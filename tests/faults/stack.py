"""A router process over fake engine processes, and what a fault scenario observes of it.

Shared by the fault-injection tests and the soak benchmark. Everything runs on loopback with
free ports; engines are the fake vLLM engine (a test double), the router is the real one.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from tests.doubles.engine_proc import FakeEngine
from tests.harness.router_proc import RouterProcess, metric_value, static_args

# Short deadlines so a fault ends in about a second; the scenarios bound the answer by these.
# A non-streamed answer (headers come with its last byte) has its own, longer one.
DEADLINE_S = 1.0
NON_STREAM_DEADLINE_S = 2 * DEADLINE_S
DEADLINE_FLAGS = [
    "--non-stream-timeout",
    str(NON_STREAM_DEADLINE_S),
    "--prefill-timeout",
    str(DEADLINE_S),
    "--first-byte-timeout",
    str(DEADLINE_S),
    "--idle-timeout",
    str(DEADLINE_S),
    "--pd-kv-wait-timeout",
    str(DEADLINE_S),
    "--connect-timeout",
    str(DEADLINE_S),
]
# Slack on top of a deadline: process scheduling on a busy 2-core CI box, and the jittered
# retry backoff.
SLACK_S = 1.5


def pd_router_args(
    prefill: Sequence[FakeEngine], decode: Sequence[FakeEngine], *extra: str
) -> list[str]:
    """Flags of a disagg_prefill router over static engines with the short deadlines."""
    engines = [*prefill, *decode]
    roles = ["prefill"] * len(prefill) + ["decode"] * len(decode)
    return [
        *static_args(engines, roles=roles),
        "--routing-logic",
        "disagg_prefill",
        *DEADLINE_FLAGS,
        "--engine-scrape-interval",
        "1",
        # The matrix checks one fault at a time; the breaker has its own scenario.
        "--breaker-failure-threshold",
        "1000",
        *extra,
    ]


def by_url(engines: Sequence[FakeEngine]) -> list[FakeEngine]:
    """Engines in the order the router breaks load ties in (by id = URL), idle engines first."""
    return sorted(engines, key=lambda e: e.url)


@dataclass
class Answer:
    """What the client saw: status, headers, the body (or SSE events) and the time taken."""

    status: int
    headers: dict[str, str]
    body: bytes
    elapsed: float
    events: list[bytes] = field(default_factory=list)  # SSE data payloads, in order

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def error_code(self) -> str | None:
        """The OpenAI error body's code (non-stream) or the final SSE error event's code."""
        if self.events:
            for data in reversed(self.events):
                if data.startswith(b"{") and b'"error"' in data:
                    return str(orjson.loads(data)["error"]["code"])
            return None
        try:
            err = orjson.loads(self.body).get("error")
        except (orjson.JSONDecodeError, AttributeError):
            return None
        return str(err["code"]) if isinstance(err, dict) else None


def unique_prompt(tag: str = "") -> str:
    """A prompt no engine has seen, so prefix affinity never overrides the load tie-break."""
    return f"{tag} {uuid.uuid4().hex} tell me a story"


def request_body(
    api: str = "completions", stream: bool = False, max_tokens: int = 8, tag: str = ""
) -> dict[str, Any]:
    prompt = unique_prompt(tag)
    body: dict[str, Any] = {"model": "tiny", "max_tokens": max_tokens, "stream": stream}
    if api == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    return body


def call(
    base_url: str,
    body: dict[str, Any],
    api: str = "completions",
    timeout: float = 15.0,
    headers: dict[str, str] | None = None,
) -> Answer:
    """Send one request with a fresh connection; streams are read to the end."""
    path = "/v1/chat/completions" if api == "chat" else "/v1/completions"
    started = time.monotonic()
    with (
        httpx.Client(timeout=timeout) as client,
        client.stream("POST", base_url + path, json=body, headers=headers) as resp,
    ):
        raw = resp.read()
        elapsed = time.monotonic() - started
        events: list[bytes] = []
        if resp.headers.get("content-type", "").startswith("text/event-stream"):
            events = [
                line[len(b"data: ") :] for line in raw.split(b"\n") if line.startswith(b"data: ")
            ]
        return Answer(resp.status_code, dict(resp.headers), raw, elapsed, events)


def open_fds(pid: int) -> int:
    """Open file descriptors of a process (sockets included)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def open_sockets(pid: int) -> int:
    count = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
                count += 1
        except OSError:  # closed between listdir and readlink
            pass
    return count


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, step: float = 0.05) -> bool:
    """Poll until `predicate()` holds; returns whether it did in time."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(step)


def in_flight_total(router: RouterProcess) -> float:
    return router.metric("pdstack_router_engine_in_flight")


def engine_view(router: RouterProcess) -> dict[str, dict[str, Any]]:
    """`GET /engines` keyed by engine URL."""
    status, raw = router.get("/engines")
    assert status == 200, raw
    return {row["url"]: row for row in orjson.loads(raw)["engines"]}


def router_pid(router: RouterProcess) -> int:
    assert router.proc is not None
    return router.proc.pid


def metric_delta(before: str, after: str, name: str, **labels: str) -> float:
    return metric_value(after, name, **labels) - metric_value(before, name, **labels)


def raw_request(port: int, path: str, body: dict[str, Any]) -> socket.socket:
    """Send a request over a raw socket and leave it open, so a test can hang up at will."""
    data = orjson.dumps(body)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(head + data)
    return sock


class Load:
    """Clients sending a mix of requests until stopped; every answer is kept."""

    def __init__(self, url: str, workers: int = 2) -> None:
        self.url = url
        self.answers: Counter[str] = Counter()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    def _run(self, worker: int) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            api = "chat" if n % 3 == 0 else "completions"
            body = request_body(api=api, stream=(n + worker) % 2 == 0, max_tokens=6)
            try:
                ans = call(self.url, body, api=api, timeout=10)
                self.answers[f"{ans.status} {ans.error_code or ''}".strip()] += 1
            except Exception as exc:  # a transport error is a failure the test must see
                self.answers[type(exc).__name__] += 1

    def stop(self) -> Counter[str]:
        self._stop.set()
        for t in self._threads:
            t.join(15)
        return self.answers
