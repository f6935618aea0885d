"""Soak: a long mixed load through a disagg_prefill router with faults injected periodically.

    python -m benchmarks.soak.soak --duration 180

Starts 2 prefill and 2 decode fake engines (the test double in tests/doubles) and the router on
loopback, sends chat/completions, stream/non-stream requests (some clients hang up early),
kills and restarts an engine and injects 5xx bursts and broken streams, then reports requests,
failures by reason, p99 latency per interval, and the router's RSS and open descriptors at the
start (after warm-up, idle) and the end (idle). Exits 1 if RSS grew more than --max-rss-growth-mb
or descriptors did not come back, within --fd-settle seconds of idling, to their count before the
first request (pooled keep-alive connections to engines close when idle).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.soak.load import Outcome, one_request
from tests.doubles.engine_proc import FakeEngine, start_fake_engine
from tests.faults.stack import open_fds, open_sockets, pd_router_args, rss_bytes, wait_for
from tests.harness.router_proc import RouterProcess

ROOT = Path(__file__).resolve().parents[2]
MB = 1024 * 1024


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak.soak", description=__doc__)
    p.add_argument("--duration", type=float, default=180.0, help="seconds of load with faults")
    p.add_argument("--warmup", type=float, default=15.0, help="seconds of load before baseline")
    p.add_argument("--concurrency", type=int, default=8, help="concurrent clients")
    p.add_argument("--interval", type=float, default=30.0, help="report p99 per this many s")
    p.add_argument("--fault-every", type=float, default=15.0, help="seconds between faults")
    p.add_argument("--disconnect-share", type=float, default=0.05, help="clients hanging up")
    p.add_argument("--max-rss-growth-mb", type=float, default=30.0)
    p.add_argument(
        "--fd-settle",
        type=float,
        default=80.0,
        help="seconds the descriptors may take to return to the cold baseline (the router's "
        "pool closes idle keep-alive connections to engines within about a minute)",
    )
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json-out", default=str(ROOT / "results" / "soak" / "soak.json"))
    return p.parse_args(argv)


class Stack:
    """The engines and the router of one soak run."""

    def __init__(self) -> None:
        self.prefill = [start_fake_engine(role="prefill", ttft_ms=10) for _ in range(2)]
        self.decode = [start_fake_engine(role="decode", itl_ms=5) for _ in range(2)]
        args = pd_router_args(self.prefill, self.decode)
        # Realistic deadlines for the soak; the breaker at its default so faults open it.
        args += ["--prefill-timeout", "5", "--first-byte-timeout", "5", "--idle-timeout", "5"]
        args += ["--breaker-failure-threshold", "5", "--breaker-cooldown", "2"]
        args += ["--engine-scrape-interval", "1"]
        self.router = RouterProcess(args).start()
        assert self.router.proc is not None
        self.pid = self.router.proc.pid
        # Before any request: only the listener and the health scraper's connections. After
        # the load, once the pool has closed its idle keep-alive connections, it must be here.
        self.cold = self.sample()

    @property
    def engines(self) -> list[FakeEngine]:
        return [*self.prefill, *self.decode]

    def sample(self) -> dict[str, float]:
        return {
            "rss_mb": rss_bytes(self.pid) / MB,
            "fds": open_fds(self.pid),
            "sockets": open_sockets(self.pid),
        }

    def quiet(self) -> None:
        """Wait until nothing is in flight and faults are off (engines back)."""
        for engine in self.engines:
            if not engine.alive:
                engine.start()
            engine.set_faults()
        wait_for(lambda: self.router.metric("pdstack_router_engine_in_flight") == 0, 15)
        time.sleep(2)

    def stop(self) -> None:
        self.router.stop()
        for engine in self.engines:
            engine.stop()


async def _faults(stack: Stack, every: float, log: list[str], rng: random.Random) -> None:
    """Cycle through the faults: kill and restart, a 5xx burst, broken decode streams."""
    kinds = ["kill", "5xx", "die_mid_stream", "hang"]
    n = 0
    while True:
        await asyncio.sleep(every)
        kind = kinds[n % len(kinds)]
        n += 1
        engine = rng.choice(stack.decode if kind == "die_mid_stream" else stack.engines)
        log.append(f"{time.strftime('%H:%M:%S')} {kind} {engine.url}")
        if kind == "kill":
            await asyncio.to_thread(engine.kill)
            await asyncio.sleep(3)
            await asyncio.to_thread(engine.start)
        elif kind == "5xx":
            await asyncio.to_thread(engine.set_faults, http_error={"status": 503, "count": 10})
        elif kind == "die_mid_stream":
            await asyncio.to_thread(
                engine.set_faults, die_mid_stream={"after_chunks": 2, "count": 3}
            )
        else:
            await asyncio.to_thread(engine.set_faults, hang={"count": 2})


async def _load(
    url: str, until: float, concurrency: int, disconnect: float, rng: random.Random
) -> list[Outcome]:
    results: list[Outcome] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while time.monotonic() < until:
                results.append(await one_request(session, url, rng, disconnect))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


def _p99(values: list[float]) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def report(results: list[Outcome], started: float, interval: float) -> dict[str, Any]:
    reasons = Counter(r.outcome for r in results)
    buckets: dict[int, list[float]] = {}
    for r in results:
        if r.outcome == "ok":
            buckets.setdefault(int((r.finished - started) // interval), []).append(r.latency)
    per_interval = [
        {"from_s": k * interval, "requests_ok": len(v), "p99_s": round(_p99(v), 3)}
        for k, v in sorted(buckets.items())
    ]
    return {"requests": len(results), "outcomes": dict(reasons), "intervals": per_interval}


async def soak(args: argparse.Namespace, stack: Stack) -> dict[str, Any]:
    rng = random.Random(args.seed)
    url = stack.router.url
    await _load(url, time.monotonic() + args.warmup, args.concurrency, 0.0, rng)
    await asyncio.to_thread(stack.quiet)
    start = stack.sample()
    fault_log: list[str] = []
    injector = asyncio.create_task(_faults(stack, args.fault_every, fault_log, rng))
    began = time.monotonic()
    try:
        results = await _load(
            url, began + args.duration, args.concurrency, args.disconnect_share, rng
        )
    finally:
        injector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await injector
    await asyncio.to_thread(stack.quiet)
    end = stack.sample()
    settle_from = time.monotonic()
    settled = await asyncio.to_thread(
        wait_for, lambda: open_fds(stack.pid) <= stack.cold["fds"], args.fd_settle, 0.5
    )
    return {
        "router_cold": stack.cold,
        "fds_settled": settled,
        "fd_settle_s": round(time.monotonic() - settle_from, 1),
        "fds_after_settle": open_fds(stack.pid),
        **report(results, began, args.interval),
        "duration_s": args.duration,
        "concurrency": args.concurrency,
        "faults": fault_log,
        "router_start": start,
        "router_end": end,
        "rss_growth_mb": round(end["rss_mb"] - start["rss_mb"], 2),
        "fd_delta": end["fds"] - start["fds"],
    }


def print_report(r: dict[str, Any]) -> None:
    print(f"requests: {r['requests']} in {r['duration_s']:.0f}s at concurrency {r['concurrency']}")
    print("outcomes: " + ", ".join(f"{k}={v}" for k, v in sorted(r["outcomes"].items())))
    print("faults injected:\n  " + "\n  ".join(r["faults"]))
    print("interval   ok requests   p99 latency (s)")
    for row in r["intervals"]:
        print(f"{row['from_s']:>6.0f}s   {row['requests_ok']:>11}   {row['p99_s']:>10.3f}")
    s, e = r["router_start"], r["router_end"]
    print(f"router RSS: {s['rss_mb']:.1f} MB -> {e['rss_mb']:.1f} MB ({r['rss_growth_mb']:+.1f})")
    print(
        f"router fds: {s['fds']} -> {e['fds']} ({r['fd_delta']:+d}); sockets {s['sockets']} -> "
        f"{e['sockets']}"
    )
    print(
        f"router fds before any request {r['router_cold']['fds']}, after {r['fd_settle_s']:g}s "
        f"idle at the end {r['fds_after_settle']}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stack = Stack()
    try:
        result = asyncio.run(soak(args, stack))
    finally:
        stack.stop()
    print_report(result)
    out = Path(args.json_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    failed = []
    if result["rss_growth_mb"] > args.max_rss_growth_mb:
        failed.append(f"RSS grew {result['rss_growth_mb']:.1f} MB > {args.max_rss_growth_mb}")
    if not result["fds_settled"]:
        failed.append(
            f"descriptors {result['fds_after_settle']} > cold baseline "
            f"{result['router_cold']['fds']} after {args.fd_settle:g}s idle"
        )
    for line in failed:
        print("SOAK FAILED: " + line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
