#!/usr/bin/env python3
"""Run the multi-round QA benchmark through pdrouter in front of fake engines, PD vs aggregated.

    .venv/bin/python benchmarks/multi-round-qa/fake_stack.py --qps 2,4,8 --duration 20

Starts, on loopback ports the OS picks, two fake engines (the repo's vLLM test double) and the
router, once as a PD stack (prefill + decode, ``disagg_prefill`` over the NIXL protocol) and once
aggregated (two ``both`` engines, round robin); runs ``run_pd.sh`` against each (labels
``fake-pd`` and ``fake-agg``) and plots both on one chart. The engines' latencies are fixed
knobs, so the figures show the tooling and the router's PD path, not vLLM's PD gains.
Arguments after ``--`` go to ``multi_round_qa.py``.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))  # for the fake engine in tests/doubles

from tests.doubles.engine_proc import start_fake_engine  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def router(backends: list[str], roles: list[str], logic: str) -> Iterator[str]:
    """Start ``pdstack-router`` on a free loopback port; yield its OpenAI base URL."""
    port = _free_port()
    binary = Path(sys.executable).with_name("pdstack-router")
    command = [str(binary), "--host", "127.0.0.1", "--port", str(port),
               "--static-backends", ",".join(backends),
               "--static-models", ",".join(["tiny"] * len(backends)),
               "--static-roles", ",".join(roles), "--routing-logic", logic,
               "--log-level", "warning"]  # fmt: skip
    proc = subprocess.Popen(command)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("pdstack-router did not become ready") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(10)


def run_stack(mode: str, args: argparse.Namespace, extra: list[str]) -> Path:
    """Start the engines and router for ``mode`` (pd or agg), run the benchmark, stop them."""
    knobs = {"models": ["tiny"], "ttft_ms": args.ttft_ms, "itl_ms": args.itl_ms}
    roles = ["prefill", "decode"] if mode == "pd" else ["both", "both"]
    logic = "disagg_prefill" if mode == "pd" else "roundrobin"
    label = f"fake-{mode}"
    with ExitStack() as stack:
        engines = [
            stack.enter_context(
                start_fake_engine(**knobs, role=role, kv_transfer_ms=args.kv_transfer_ms)
            )
            for role in roles
        ]
        base_url = stack.enter_context(router([e.url for e in engines], roles, logic))
        env = {**os.environ, "RESULTS_DIR": str(args.results), "PYTHON": sys.executable}
        command = ["bash", str(HERE / "run_pd.sh"), "tiny", base_url, label,
                   "--qps", args.qps, "--duration", str(args.duration)]  # fmt: skip
        subprocess.run(command + extra, env=env, check=True)
    results: Path = args.results
    return results / label


def main() -> int:
    """Run both stacks, then plot them together."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qps", default="2,4,8", help="QPS levels (default 2,4,8)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per level")
    parser.add_argument("--ttft-ms", type=float, default=50.0, help="engine prefill time")
    parser.add_argument("--itl-ms", type=float, default=10.0, help="engine inter-token time")
    parser.add_argument("--kv-transfer-ms", type=float, default=5.0, help="decode's KV pull")
    parser.add_argument("--modes", default="pd,agg", help="which stacks to run")
    parser.add_argument("--results", type=Path, default=ROOT / "results" / "multi-round-qa")
    parser.add_argument("--plot", type=Path, help="default: <results>/fake-compare.png")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    dirs = [run_stack(mode, args, extra) for mode in args.modes.split(",")]
    plot = args.plot or args.results / "fake-compare.png"
    subprocess.run(
        [sys.executable, str(HERE / "plot.py"), *map(str, dirs), "-o", str(plot)], check=True
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
