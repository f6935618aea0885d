"""`vllm serve` double: vLLM's command line in front of the fake engine (a test double).

The cluster tests run it where a pod's container would run `vllm serve ...` and no real engine
fits (GPU-sized values files, churn under load). It takes exactly the options the installed
vLLM's `serve` takes (the table is read from vLLM's own parser, see vllm_cli_table.py): an
unknown flag, a missing value or a value outside a flag's choices exits with status 2 and
argparse's message, as `vllm serve` would. `--kv-transfer-config` must be valid JSON with a
known role. Then it serves tests.doubles.fake_engine on --host/--port as the served model name,
in the role the KV config gives, with NIXL params naming VLLM_NIXL_SIDE_CHANNEL_HOST.

On SIGTERM it behaves as vLLM 0.32 does: `--shutdown-timeout 0` (the default) aborts requests in
flight; N > 0 stops accepting and lets them finish for up to N seconds.

    python -m tests.doubles.vllm_serve serve MODEL --host 0.0.0.0 --port 8000 [vLLM options]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from typing import Any

from aiohttp import web

from tests.doubles.engine_parts.knobs import Knobs
from tests.doubles.engine_parts.state import EngineState
from tests.doubles.fake_engine import build_app
from tests.doubles.vllm_cli_table import load_table

ROLES = {"kv_producer": "prefill", "kv_consumer": "decode", "kv_both": "both"}
log = logging.getLogger("vllm_serve_double")


def build_parser(table: list[dict[str, Any]]) -> argparse.ArgumentParser:
    """An argparse parser with vLLM's serve options (names, arity, string choices)."""
    parser = argparse.ArgumentParser(prog="vllm serve", allow_abbrev=False)
    parser.add_argument("model_tag", nargs="?")
    for option in table:
        flags, nargs = option["flags"], option["nargs"]
        if nargs == 0:
            parser.add_argument(*flags, action="store_true")
        else:
            parser.add_argument(
                *flags, nargs=None if nargs == 1 else nargs, choices=option["choices"]
            )
    return parser


def normalise(argv: list[str]) -> list[str]:
    """vLLM accepts --max_model_len for --max-model-len; so does the double."""
    out = []
    for arg in argv:
        name, eq, value = arg.partition("=")
        out.append(name.replace("_", "-") + eq + value if arg.startswith("--") else arg)
    return out


def knobs_from(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Knobs:
    model = args.model_tag or args.model
    if not model:
        parser.error("a model is required (positional model_tag or --model)")
    served = args.served_model_name
    names = served if isinstance(served, list) else ([served] if served else [model])
    changes: dict[str, Any] = {"models": ",".join(names)}
    if args.kv_transfer_config:
        try:
            kv = json.loads(args.kv_transfer_config)
        except json.JSONDecodeError as exc:
            parser.error(f"argument --kv-transfer-config: invalid JSON: {exc}")
        if kv.get("kv_role") not in ROLES:
            parser.error(f"--kv-transfer-config: kv_role must be one of {sorted(ROLES)}")
        changes["role"] = ROLES[kv["kv_role"]]
        if "kv_load_failure_policy" in kv:
            changes["kv_load_failure_policy"] = kv["kv_load_failure_policy"]
    if args.max_model_len:
        changes["max_model_len"] = int(args.max_model_len)
    if args.block_size:
        changes["block_size"] = int(args.block_size)
    if args.tensor_parallel_size:
        changes["tp_size"] = int(args.tensor_parallel_size)
    if os.environ.get("VLLM_NIXL_SIDE_CHANNEL_HOST"):
        changes["side_channel_host"] = os.environ["VLLM_NIXL_SIDE_CHANNEL_HOST"]
    # A little work per token, so streams last long enough to be caught mid-way by churn.
    changes["ttft_ms"] = float(os.environ.get("PDSTACK_DOUBLE_TTFT_MS", "20"))
    changes["itl_ms"] = float(os.environ.get("PDSTACK_DOUBLE_ITL_MS", "10"))
    return Knobs().updated(changes)


async def serve(knobs: Knobs, host: str, port: int, shutdown_timeout: float) -> None:
    state = EngineState(knobs)
    runner = web.AppRunner(
        build_app(state), access_log=None, handler_cancellation=True,
        shutdown_timeout=max(shutdown_timeout, 0.01),
    )  # fmt: skip
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    state.port = port  # the fake's KV pulls go to remote_host:remote_port over HTTP
    log.warning("vLLM serve double: %s as %s on %s:%d", knobs.role, knobs.models, host, port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    mode = "drain" if shutdown_timeout > 0 else "abort"
    log.warning("shutdown: mode=%s timeout=%ss", mode, shutdown_timeout)
    await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "serve":
        sys.exit("vllm serve double: only the `serve` subcommand is provided")
    parser = build_parser(load_table())
    args = parser.parse_args(normalise(argv[1:]))
    knobs = knobs_from(args, parser)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    host = args.host or "0.0.0.0"
    port = int(args.port or 8000)
    asyncio.run(serve(knobs, host, port, float(args.shutdown_timeout or 0)))


if __name__ == "__main__":
    main()
