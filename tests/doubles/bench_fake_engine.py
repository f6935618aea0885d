"""How many streamed requests/s one fake engine process serves (prints figures, asserts none).

    python -m tests.doubles.bench_fake_engine --concurrency 32 --tokens 16 --seconds 5

Also prints the engine's CPU seconds per 1,000 requests (from /proc), which tells a benchmark
how many fake engine processes it needs so that they are never the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import aiohttp

from tests.doubles.engine_proc import start_fake_engine


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(url: str, concurrency: int, tokens: int, seconds: float) -> tuple[int, int, float]:
    body = {"model": "tiny", "prompt": "hello world " * 8, "max_tokens": tokens, "stream": True}
    done = errors = 0
    deadline = time.monotonic() + seconds
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as http:

        async def worker() -> None:
            nonlocal done, errors
            while time.monotonic() < deadline:
                async with http.post(url + "/v1/completions", json=body) as r:
                    data = await r.read()
                    if r.status == 200 and data.endswith(b"data: [DONE]\n\n"):
                        done += 1
                    else:
                        errors += 1

        start = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done, errors, time.monotonic() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--coalesce-chunks", action="store_true")
    ap.add_argument("--ttft-ms", type=float, default=0.0)
    ap.add_argument("--itl-ms", type=float, default=0.0)
    args = ap.parse_args()
    engine = start_fake_engine(
        coalesce_chunks=args.coalesce_chunks, ttft_ms=args.ttft_ms, itl_ms=args.itl_ms
    )
    try:
        assert engine.proc is not None
        asyncio.run(load(engine.url, 4, args.tokens, 0.5))  # warm up
        cpu0 = cpu_seconds(engine.proc.pid)
        done, errors, wall = asyncio.run(
            load(engine.url, args.concurrency, args.tokens, args.seconds)
        )
        cpu = cpu_seconds(engine.proc.pid) - cpu0
    finally:
        engine.stop()
    print(
        f"fake engine, {args.tokens}-token streams, concurrency {args.concurrency}, "
        f"ttft {args.ttft_ms} ms, itl {args.itl_ms} ms, coalesce={args.coalesce_chunks}: "
        f"{done / wall:.0f} req/s ({errors} errors), "
        f"engine CPU {cpu:.2f} s = {1000 * cpu / max(done, 1):.3f} s per 1000 req "
        f"-> ~{done / max(cpu, 1e-9):.0f} req/s per fully used engine core"
    )


if __name__ == "__main__":
    main()
