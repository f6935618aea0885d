#!/usr/bin/env python3
"""Run the multi-round QA benchmark through pdrouter on this machine, PD vs aggregated.

    .venv/bin/python benchmarks/multi-round-qa/local_stack.py --qps 2,4,8 --duration 20
    .venv/bin/python benchmarks/multi-round-qa/local_stack.py --engines vllm --qps 0.5,1

Starts two engines and the router on loopback ports the OS picks, once as a PD stack (prefill
+ decode, ``disagg_prefill`` over the NIXL protocol) and once aggregated (two ``both`` engines,
round robin); runs ``run_pd.sh`` against each (labels ``<engines>-pd`` and ``<engines>-agg``)
and plots both on one chart. ``--engines fake`` (default) uses the repo's vLLM test double with
fixed latencies: it shows the tooling and the router's PD path, not vLLM's PD gains.
``--engines vllm`` uses real vLLM CPU engines serving the tiny random-weight model
(scripts/engines; one core each). Arguments after ``--`` go to ``multi_round_qa.py``.
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

# The real engines serve a tiny model with a 1,024-token context: a workload that fits it
# (its small-vocabulary tokenizer makes this about 580 prompt tokens in round 1 and 750 by
# round 3). Random weights stop at random, so ignore_eos keeps answers at max_tokens.
# Later flags override these.
VLLM_WORKLOAD = [
    "--system-prompt-tokens", "200", "--user-history-tokens", "50", "--question-tokens", "20",
    "--answer-tokens", "32", "--rounds", "3", "--ignore-eos",
]  # fmt: skip


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
        deadline = time.monotonic() + 60
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


@contextmanager
def fake_engines(roles: list[str], args: argparse.Namespace) -> Iterator[list[str]]:
    """Fake engines (test doubles) with the latencies given on the command line."""
    knobs = {"models": ["tiny"], "ttft_ms": args.ttft_ms, "itl_ms": args.itl_ms}
    with ExitStack() as stack:
        engines = [
            stack.enter_context(
                start_fake_engine(**knobs, role=role, kv_transfer_ms=args.kv_transfer_ms)
            )
            for role in roles
        ]
        yield [engine.url for engine in engines]


@contextmanager
def vllm_engines(roles: list[str], args: argparse.Namespace) -> Iterator[list[str]]:
    """Real vLLM CPU engines, one core each, via scripts/engines (installs on first use)."""
    sys.path.insert(0, str(ROOT / "scripts" / "engines"))
    import engines
    import procs

    engines.ensure_vllm()
    engines.ensure_tiny_model()
    logs = args.results / "engine-logs"
    logs.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    started = []
    try:
        for index, role in enumerate(roles):
            log = logs / f"vllm-{role}-{index}.log"
            port, side_port = procs.free_port(), procs.free_port()
            started.append(engines.start_vllm(role, port, index % cores, side_port, log))
        for proc in started:
            proc.wait_ready(timeout=300.0)
        yield [proc.url for proc in started]
    finally:
        for proc in reversed(started):
            proc.stop()


def run_stack(mode: str, args: argparse.Namespace, extra: list[str]) -> Path:
    """Start the engines and router for ``mode`` (pd or agg), run the benchmark, stop them."""
    roles = ["prefill", "decode"] if mode == "pd" else ["both", "both"]
    logic = "disagg_prefill" if mode == "pd" else "roundrobin"
    label = f"{args.engines}-{mode}"
    start_engines = fake_engines if args.engines == "fake" else vllm_engines
    workload = VLLM_WORKLOAD if args.engines == "vllm" else []
    with start_engines(roles, args) as urls, router(urls, roles, logic) as base_url:
        env = {**os.environ, "RESULTS_DIR": str(args.results), "PYTHON": sys.executable}
        command = ["bash", str(HERE / "run_pd.sh"), "tiny", base_url, label, "--qps", args.qps,
                   "--duration", str(args.duration), *workload, *extra]  # fmt: skip
        subprocess.run(command, env=env, check=True)
    results: Path = args.results
    return results / label


def main() -> int:
    """Run both stacks, then plot them together."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", choices=["fake", "vllm"], default="fake")
    parser.add_argument("--qps", default="2,4,8", help="QPS levels (default 2,4,8)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per level")
    parser.add_argument("--ttft-ms", type=float, default=50.0, help="fake engine prefill time")
    parser.add_argument("--itl-ms", type=float, default=10.0, help="fake engine token time")
    parser.add_argument("--kv-transfer-ms", type=float, default=5.0, help="fake decode KV pull")
    parser.add_argument("--modes", default="pd,agg", help="which stacks to run")
    parser.add_argument("--results", type=Path, default=ROOT / "results" / "multi-round-qa")
    parser.add_argument("--plot", type=Path, help="default: <results>/<engines>-compare.png")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    dirs = [run_stack(mode, args, extra) for mode in args.modes.split(",")]
    plot = args.plot or args.results / f"{args.engines}-compare.png"
    subprocess.run(
        [sys.executable, str(HERE / "plot.py"), *map(str, dirs), "-o", str(plot)], check=True
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
