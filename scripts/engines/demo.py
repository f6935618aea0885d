"""`make demo`: real vLLM engines on this machine behind the pdstack router, until Ctrl-C.

    MODE=pd (default): a prefill engine (core 0) + a decode engine (core 1) joined by NIXL,
                       and the router in disagg_prefill mode.
    MODE=aggregated:   one engine and the router in roundrobin mode.

Run it with the router's Python (.venv/bin/python); scripts/engines/demo.sh does that.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
import time

import engines
import procs
import router_proc

LOGS = procs.ROOT / ".cache" / "demo-logs"


def banner(step: int, total: int, text: str) -> None:
    """Print one progress step."""
    print(f"\n==> [{step}/{total}] {text}", flush=True)


def wait_with_progress(processes: list[procs.ManagedProcess], what: str) -> None:
    """Wait for every process to be ready, printing a heartbeat so the wait is explained."""
    done = threading.Event()

    def heartbeat() -> None:
        start = time.monotonic()
        while not done.wait(5.0):
            print(f"    ... {what} ({time.monotonic() - start:.0f}s)", flush=True)

    thread = threading.Thread(target=heartbeat, daemon=True)
    thread.start()
    try:
        for proc in processes:
            took = proc.wait_ready(timeout=300.0)
            print(f"    {proc.name} ready after {took:.1f}s (log: {proc.log_path})", flush=True)
    finally:
        done.set()


def router_port() -> int:
    """PDSTACK_DEMO_PORT, else 8000 when free, else any free port."""
    wanted = int(os.environ.get("PDSTACK_DEMO_PORT", "8000"))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((procs.LOOPBACK, wanted))
        except OSError:
            return procs.free_port()
    return wanted


def print_usage(url: str, mode: str) -> None:
    """Tell the user how to talk to the router."""
    print(
        f"""
pdstack demo is up ({mode}). Router: {url}

  curl -s {url}/v1/completions -H 'Content-Type: application/json' \\
       -d '{{"model": "tiny", "prompt": "def fib(n):", "max_tokens": 32, "temperature": 0}}'

  .venv/bin/python - <<'PY'
  from openai import OpenAI
  client = OpenAI(base_url="{url}/v1", api_key="unused")
  out = client.chat.completions.create(
      model="tiny", messages=[{{"role": "user", "content": "hello"}}], max_tokens=32)
  print(out.choices[0].message.content)   # random weights: gibberish, but real vLLM
  PY

  Router metrics: curl -s {url}/metrics | grep pdstack_router_
  Logs: {LOGS}
Press Ctrl-C to stop every process.""",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description="pdstack demo with real vLLM CPU engines")
    parser.add_argument("--mode", choices=["pd", "aggregated"], default="pd")
    mode = parser.parse_args().mode
    started: list[procs.ManagedProcess] = []
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        banner(1, 4, "vLLM CPU environment (first run only: ~150 packages, 3.7 GB, a few minutes)")
        engines.ensure_vllm()
        banner(2, 4, "Tiny model (random weights, built offline)")
        engines.ensure_tiny_model()

        LOGS.mkdir(parents=True, exist_ok=True)
        if mode == "pd":
            banner(
                3, 4, "Starting a prefill engine (core 0) and a decode engine (core 1), ~30-60 s"
            )
            roles = ["prefill", "decode"]
            for core, role in enumerate(roles):
                port = procs.free_port()
                started.append(
                    engines.start_vllm(
                        role,  # type: ignore[arg-type]
                        port,
                        core,
                        procs.free_port(),
                        LOGS / f"vllm-{role}.log",
                    )
                )
            logic = "disagg_prefill"
        else:
            banner(3, 4, "Starting one vLLM engine, ~30-70 s")
            roles = ["both"]
            started.append(
                engines.start_vllm(
                    "both", procs.free_port(), 0, procs.free_port(), LOGS / "vllm-both.log"
                )
            )
            logic = "roundrobin"
        wait_with_progress(started, "engines loading (Python imports, model, KV cache)")

        banner(4, 4, f"Starting the router ({logic})")
        router = router_proc.start_router(
            router_port(), [p.url for p in started], roles, LOGS / "router.log", logic
        )
        started.append(router)
        wait_with_progress([router], "router waiting for healthy engines")
        print_usage(router.url, mode)

        while not stop.wait(1.0):
            dead = [p.name for p in started if not p.alive()]
            if dead:
                print(f"\nstopped unexpectedly: {', '.join(dead)} (see {LOGS})", file=sys.stderr)
                return 1
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        print("\nStopping every demo process ...", flush=True)
        for proc in reversed(started):
            proc.stop()
        print("Stopped.", flush=True)


if __name__ == "__main__":
    sys.exit(main())
