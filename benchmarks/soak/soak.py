"""Soak: a long mixed load through a disagg_prefill router with faults injected periodically.

    python -m benchmarks.soak.soak --duration 180

Starts 2 prefill and 2 decode fake engines (the test double in tests/doubles) as pods of a fake
Kubernetes API (also a test double) and two routers A and B discovering them, sends chat and
completions, stream and non-stream requests (some clients hang up early), kills and restarts an
engine and injects 5xx bursts, broken and hanging streams. Meanwhile slow readers stream
answers at 1 KiB per 50 ms, slowloris clients open bursts of connections that dribble their
headers, a controller relabels every engine pod every few seconds, and router B gets SIGTERM
mid-run (its clients move to A once B fails /ready, as a Service's endpoints would).

Reports requests, failures by reason, p99 latency per interval, the routers' shutdown and edge
figures, and router A's RSS and open descriptors at the start (after warm-up, idle) and the end
(idle). Exits 1 if RSS grew more than --max-rss-growth-mb, if descriptors did not come back
within --fd-settle seconds of idling to their count before the first request, if an engine is
stuck (unhealthy, breaker not closed, in-flight left, or no traffic in a final round), if a
slowloris connection stayed open, or if any client saw a transport error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson

from benchmarks.soak.edge import (
    EdgeReport,
    RollingRestart,
    by_router,
    relabeler,
    slow_readers,
    slowloris,
)
from benchmarks.soak.load import Outcome, one_request
from tests.doubles.engine_proc import FakeEngine, start_fake_engine
from tests.faults.kube import NAMESPACE, SELECTOR, KubeApiThread
from tests.faults.stack import open_fds, open_sockets, rss_bytes, wait_for
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
    p.add_argument("--slow-readers", type=int, default=2, help="clients reading streams slowly")
    p.add_argument("--slowloris-every", type=float, default=10.0, help="seconds between bursts")
    p.add_argument("--slowloris-burst", type=int, default=20, help="connections per burst")
    p.add_argument("--relabel-every", type=float, default=3.0, help="seconds between relabels")
    p.add_argument("--b-clients", type=int, default=2, help="clients on router B (SIGTERM'd)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json-out", default=str(ROOT / "results" / "soak" / "soak.json"))
    return p.parse_args(argv)


def router_args() -> list[str]:
    """A disagg_prefill router on Kubernetes discovery with realistic deadlines; the breaker at
    its default threshold so faults open it; short header timeout and drain for the edge."""
    return [
        *("--service-discovery", "k8s", "--k8s-namespace", NAMESPACE),
        *("--k8s-label-selector", SELECTOR, "--k8s-relist-interval", "0.5"),
        *("--routing-logic", "disagg_prefill", "--engine-scrape-interval", "1"),
        *("--prefill-timeout", "5", "--first-byte-timeout", "5", "--idle-timeout", "5"),
        *("--breaker-failure-threshold", "5", "--breaker-cooldown", "2"),
        *("--request-header-timeout", "2", "--drain-delay", "2", "--shutdown-grace-period", "5"),
    ]


class Stack:
    """The engines, the fake Kubernetes API and the two routers of one soak run."""

    def __init__(self) -> None:
        self.prefill = [start_fake_engine(role="prefill", ttft_ms=10) for _ in range(2)]
        self.decode = [start_fake_engine(role="decode", itl_ms=5) for _ in range(2)]
        self.api = KubeApiThread()
        for engine in self.prefill:
            self.api.add(engine, "prefill")
        for engine in self.decode:
            self.api.add(engine, "decode")
        self._tmp = tempfile.TemporaryDirectory(prefix="soak-")
        kubeconfig = self.api.kubeconfig(Path(self._tmp.name) / "kubeconfig")
        env = {"KUBECONFIG": str(kubeconfig), "KUBERNETES_SERVICE_HOST": ""}
        self.router = RouterProcess(router_args(), env).start()
        self.router_b = RouterProcess(router_args(), env).start()
        assert self.router.proc is not None
        self.pid = self.router.proc.pid
        # Before any request: only the listener, the watch and the health scraper's
        # connections. After the load, once the pool has closed its idle keep-alive
        # connections, it must be here again.
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
            else:  # a restart the fault injector began may still be under way
                engine.wait_ready()
            engine.set_faults()
        wait_for(lambda: self.router.metric("pdstack_router_engine_in_flight") == 0, 15)
        # Breakers opened by the last faults close (cooldown 2 s), and failures stop counting
        # as load (--engine-failure-window, 10 s).
        time.sleep(11)

    def stuck_engines(self) -> dict[str, str]:
        """Engines router A would not route to, or that a final round of requests missed."""
        stuck: dict[str, str] = {}
        _, raw = self.router.get("/engines")
        for row in orjson.loads(raw)["engines"]:
            if not row["healthy"] or row["breaker"] != "closed" or row["in_flight"]:
                stuck[row["url"]] = (
                    f"healthy={row['healthy']} breaker={row['breaker']} "
                    f"in_flight={row['in_flight']}"
                )
        before = {e.url: sum(e.stats()["by_path"].values()) for e in self.engines}

        def client(i: int) -> None:  # concurrent streams: in-flight counts spread the picks
            body = {"model": "tiny", "prompt": f"final {i} a b c", "max_tokens": 30}
            with httpx.Client(timeout=15) as c:
                for _ in range(3):
                    c.post(self.router.url + "/v1/completions", json={**body, "stream": True})

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for engine in self.engines:
            if sum(engine.stats()["by_path"].values()) == before[engine.url]:
                stuck.setdefault(engine.url, "no request in the final round")
        return stuck

    def stop(self) -> None:
        self.router.stop()
        self.router_b.stop()
        for engine in self.engines:
            engine.stop()
        self.api.close()
        self._tmp.cleanup()


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
    url: str | RollingRestart,
    name: str,
    until: float,
    concurrency: int,
    disconnect: float,
    rng: random.Random,
) -> list[tuple[str, Outcome]]:
    results: list[tuple[str, Outcome]] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while time.monotonic() < until:
                target = url if isinstance(url, str) else url.url()
                results.append((name, await one_request(session, target, rng, disconnect)))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


def _p99(values: list[float]) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def report(results: list[tuple[str, Outcome]], started: float, interval: float) -> dict[str, Any]:
    reasons = Counter(r.outcome for _, r in results)
    buckets: dict[int, list[float]] = {}
    for _, r in results:
        if r.outcome == "ok":
            buckets.setdefault(int((r.finished - started) // interval), []).append(r.latency)
    per_interval = [
        {"from_s": k * interval, "requests_ok": len(v), "p99_s": round(_p99(v), 3)}
        for k, v in sorted(buckets.items())
    ]
    return {
        "requests": len(results),
        "outcomes": dict(reasons),
        "outcomes_b": dict(by_router(results, lambda name: name == "B")),
        "intervals": per_interval,
    }


async def soak(args: argparse.Namespace, stack: Stack) -> dict[str, Any]:
    rng = random.Random(args.seed)
    url = stack.router.url
    await _load(url, "A", time.monotonic() + args.warmup, args.concurrency, 0.0, rng)
    await asyncio.to_thread(stack.quiet)
    start = stack.sample()
    fault_log: list[str] = []
    edge = EdgeReport()
    began = time.monotonic()
    until = began + args.duration
    rolling = RollingRestart(stack.router, stack.router_b)
    background = [
        asyncio.create_task(_faults(stack, args.fault_every, fault_log, rng)),
        asyncio.create_task(relabeler(stack.api, args.relabel_every, edge)),
    ]
    try:
        loads = await asyncio.gather(
            _load(url, "A", until, args.concurrency - args.b_clients, args.disconnect_share, rng),
            _load(rolling, "B", until, args.b_clients, args.disconnect_share, rng),
            slow_readers(url, until, args.slow_readers, edge, rng),
            slowloris(stack.router.port, until, args.slowloris_every, args.slowloris_burst, edge),
            rolling.terminate_after(args.duration / 2, edge),
        )
    finally:
        for task in background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    results = loads[0] + loads[1]
    await asyncio.to_thread(stack.quiet)
    end = stack.sample()
    stuck = await asyncio.to_thread(stack.stuck_engines)
    settle_from = time.monotonic()
    settled = await asyncio.to_thread(
        wait_for, lambda: open_fds(stack.pid) <= stack.cold["fds"], args.fd_settle, 0.5
    )
    transport = sum(
        v for k, v in Counter(r.outcome for _, r in results).items() if "transport" in k
    )
    transport += sum(v for k, v in edge.slow_reads.items() if "transport" in k)
    close_s = sorted(edge.slowloris_close_s) or [float("nan")]
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
        "stuck_engines": stuck,
        "transport_errors": transport,
        "slow_reads": dict(edge.slow_reads),
        "slowloris": {
            "opened": edge.slowloris_opened,
            "closed_by_router": edge.slowloris_closed_by_router,
            "close_after_s_median": round(close_s[len(close_s) // 2], 2),
            "close_after_s_max": round(close_s[-1], 2),
        },
        "relabel_rounds": edge.relabels,
        "sigterm_b": edge.sigterm,
    }


def print_report(r: dict[str, Any]) -> None:
    print(f"requests: {r['requests']} in {r['duration_s']:.0f}s at concurrency {r['concurrency']}")
    print("outcomes: " + ", ".join(f"{k}={v}" for k, v in sorted(r["outcomes"].items())))
    print("  of which on router B: " + ", ".join(f"{k}={v}" for k, v in r["outcomes_b"].items()))
    print("faults injected:\n  " + "\n  ".join(r["faults"]))
    print("interval   ok requests   p99 latency (s)")
    for row in r["intervals"]:
        print(f"{row['from_s']:>6.0f}s   {row['requests_ok']:>11}   {row['p99_s']:>10.3f}")
    print("slow readers: " + ", ".join(f"{k}={v}" for k, v in sorted(r["slow_reads"].items())))
    lo = r["slowloris"]
    print(
        f"slowloris: {lo['closed_by_router']}/{lo['opened']} connections closed by the router, "
        f"after {lo['close_after_s_median']}s (median), {lo['close_after_s_max']}s (max)"
    )
    print(f"relabel rounds (every pod each time): {r['relabel_rounds']}")
    b = r["sigterm_b"]
    print(
        f"router B SIGTERM: /ready failed after {b.get('ready_failed_after_s')}s, exited after "
        f"{b.get('exited_after_s')}s (exit code {b.get('exit_code')})"
    )
    print(f"transport errors seen by clients: {r['transport_errors']}")
    print(f"stuck engines: {r['stuck_engines'] or 'none'}")
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
    if result["stuck_engines"]:
        failed.append(f"stuck engines: {result['stuck_engines']}")
    if result["transport_errors"]:
        failed.append(f"{result['transport_errors']} transport errors")
    lo = result["slowloris"]
    if lo["closed_by_router"] < lo["opened"]:
        failed.append(f"slowloris: {lo['opened'] - lo['closed_by_router']} connections left open")
    for line in failed:
        print("SOAK FAILED: " + line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
