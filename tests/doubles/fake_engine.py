"""Fake vLLM engine: a named test double for the router's integration, fault and bench tests.

Speaks vLLM's OpenAI API (completions and chat, stream and non-stream), ``/metrics`` with
vLLM's names, ``/tokenize``, NIXL-style ``kv_transfer_params`` prefill/decode with a real KV
pull between two fake processes, LMCache native PD notifications over ZMQ, and fault
injection (config or ``X-Fault`` header). Output is deterministic (see engine_parts/textgen).

Run from the repo root::

    python -m tests.doubles.fake_engine --port 8100 --model tiny --ttft-ms 20 --itl-ms 5
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
import sys
from pathlib import Path

from aiohttp import web

from tests.doubles.engine_parts.admin import AdminHandler, add_routes
from tests.doubles.engine_parts.inference import InferenceHandler
from tests.doubles.engine_parts.knobs import Knobs, build_parser, knobs_from_args
from tests.doubles.engine_parts.pooling import PoolingHandler, add_pooling_routes
from tests.doubles.engine_parts.state import EngineState

log = logging.getLogger("fake_engine")


def build_app(state: EngineState) -> web.Application:
    """The aiohttp application for one engine state (tests may embed it in-process)."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    inference = InferenceHandler(state)
    app.router.add_post("/v1/completions", inference.completions)
    app.router.add_post("/v1/chat/completions", inference.chat)
    add_routes(app, AdminHandler(state))
    add_pooling_routes(app, PoolingHandler(state))

    async def _close(_app: web.Application) -> None:
        await state.close()

    app.on_cleanup.append(_close)
    return app


async def serve(
    knobs: Knobs, host: str, port: int, port_file: str | None, tls: ssl.SSLContext | None = None
) -> None:
    """Listen until SIGTERM/SIGINT; write the bound port to ``port_file`` once ready."""
    state = EngineState(knobs)
    # handler_cancellation: a client that disconnects cancels its handler, as in vLLM.
    runner = web.AppRunner(
        build_app(state), access_log=None, handler_cancellation=True, shutdown_timeout=0.5
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True, backlog=4096, ssl_context=tls)
    await site.start()
    state.port = int(runner.addresses[0][1])
    if port_file:
        tmp = Path(port_file + ".tmp")
        tmp.write_text(str(state.port))
        tmp.replace(port_file)  # atomic: readers never see a partial number
    log.info("fake engine %s listening on %s:%d", knobs.engine_id, host, state.port)
    print(f"FAKE_ENGINE_READY port={state.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        knobs = knobs_from_args(args)
    except ValueError as exc:
        sys.exit(f"fake_engine: {exc}")
    logging.basicConfig(
        level=os.environ.get("FAKE_ENGINE_LOG_LEVEL", "WARNING"),
        format="%(asctime)s fake_engine[%(process)d] %(levelname)s %(message)s",
    )
    tls = None
    if args.tls_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    coro = serve(knobs, args.host, args.port, args.port_file, tls)
    try:
        import uvloop  # optional: faster loop when installed
    except ImportError:
        asyncio.run(coro)
        return
    with (
        contextlib.suppress(KeyboardInterrupt),
        asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
    ):
        runner.run(coro)


if __name__ == "__main__":
    main()
