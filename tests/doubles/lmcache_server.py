"""LMCache cache-server double (a test double): `lmcache_server HOST PORT [DEVICE]`'s command
line and socket, no cache.

LMCache needs CUDA (see docs/real-engines.md), so where a pod would run the real server the
cluster tests run this: it takes the same arguments, exits 1 with a usage line on others,
listens on HOST:PORT (what the chart's tcpSocket probes check) and accepts connections, reading
and discarding what they send. It stores and serves no KV.

    python -m tests.doubles.lmcache_server 0.0.0.0 8100
"""

from __future__ import annotations

import asyncio
import signal
import sys


async def _drain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while await reader.read(65536):
        pass
    writer.close()


async def serve(host: str, port: int) -> None:
    server = await asyncio.start_server(_drain, host, port, reuse_address=True)
    print(f"lmcache_server double listening on {host}:{port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3) or not argv[1].isdigit():
        print("Usage: lmcache_server <host> <port> [device]", file=sys.stderr)
        return 1
    asyncio.run(serve(argv[0], int(argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
