"""The soak's edge clients and operators: slow readers, slowloris connections, a controller that
relabels engine pods, and a rolling restart that sends SIGTERM to a second router mid-run."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from benchmarks.soak.load import Outcome, sse_error
from tests.faults.kube import KubeApiThread
from tests.faults.stack import wait_for
from tests.harness.router_proc import RouterProcess


@dataclass
class EdgeReport:
    """What the edge clients and operators saw."""

    slow_reads: Counter[str] = field(default_factory=Counter)
    slowloris_opened: int = 0
    slowloris_closed_by_router: int = 0
    slowloris_close_s: list[float] = field(default_factory=list)
    relabels: int = 0
    sigterm: dict[str, object] = field(default_factory=dict)


async def slow_readers(
    url: str, until: float, clients: int, report: EdgeReport, rng: random.Random
) -> None:
    """Streams read 1 KiB every 50 ms: much slower than the engine writes them."""

    async def one(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < until:
            body = {"model": "tiny", "prompt": f"slow {rng.random()}", "max_tokens": 400}
            body["stream"] = True
            raw = b""
            try:
                async with session.post(url + "/v1/completions", json=body) as resp:
                    while chunk := await resp.content.read(1024):
                        raw += chunk
                        await asyncio.sleep(0.05)
            except (TimeoutError, aiohttp.ClientError) as exc:
                report.slow_reads[f"transport:{type(exc).__name__}"] += 1
                continue
            code = sse_error(raw)
            done = raw.rstrip().endswith(b"data: [DONE]")
            report.slow_reads[code or ("ok" if done else "stream_without_done")] += 1

    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(one(session) for _ in range(clients)))


async def slowloris(port: int, until: float, every: float, burst: int, report: EdgeReport) -> None:
    """Bursts of connections that send a request's headers one byte a second."""

    async def one() -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return
        report.slowloris_opened += 1
        opened = time.monotonic()
        writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: soak\r\nX-Slow: ")
        closed = False
        try:
            while time.monotonic() - opened < 60:
                try:
                    data = await asyncio.wait_for(reader.read(4096), 1.0)
                except TimeoutError:
                    writer.write(b"a")
                    continue
                if not data:  # the router closed it (after its 408)
                    closed = True
                    break
        except ConnectionError:
            closed = True
        if closed:
            report.slowloris_closed_by_router += 1
            report.slowloris_close_s.append(time.monotonic() - opened)
        writer.close()

    tasks: list[asyncio.Task[None]] = []
    while time.monotonic() < until:
        tasks += [asyncio.create_task(one()) for _ in range(burst)]
        await asyncio.sleep(every)
    await asyncio.gather(*tasks, return_exceptions=True)


async def relabeler(api: KubeApiThread, every: float, report: EdgeReport) -> None:
    """A controller that keeps changing engine pods' labels (same pods, same uids)."""
    n = 0
    while True:
        await asyncio.sleep(every)
        for uid in list(api.pods):
            n += 1
            api.relabel(uid, **{"example.com/revision": str(n)})
        report.relabels += 1


class RollingRestart:
    """Clients of a second router B follow it until it fails /ready after a SIGTERM, then go to
    A, as a Service's endpoints would. Records how B's shutdown went."""

    def __init__(self, a: RouterProcess, b: RouterProcess) -> None:
        self.a, self.b = a, b
        self.switched = False

    def url(self) -> str:
        return self.a.url if self.switched else self.b.url

    async def terminate_after(self, delay: float, report: EdgeReport) -> None:
        await asyncio.sleep(delay)
        assert self.b.proc is not None
        sent = time.monotonic()
        os.kill(self.b.proc.pid, signal.SIGTERM)
        await asyncio.to_thread(wait_for, lambda: self.b.get("/ready")[0] != 200, 10, 0.05)
        self.switched = True
        failed_ready = time.monotonic() - sent
        exit_code = await asyncio.to_thread(self.b.proc.wait, 60)
        report.sigterm = {
            "ready_failed_after_s": round(failed_ready, 2),
            "exited_after_s": round(time.monotonic() - sent, 2),
            "exit_code": exit_code,
        }


def by_router(results: list[tuple[str, Outcome]], which: Callable[[str], bool]) -> Counter[str]:
    return Counter(o.outcome for name, o in results if which(name))
