"""Launch llm-d's vLLM simulator (llm-d-inference-sim) processes for conformance tests.

    import simulators
    binary = simulators.ensure_sim()            # builds once into .tools/bin
    sim = simulators.start_sim(binary, port, log_path)
    sim.wait_ready(); ...; sim.stop()

The simulator speaks vLLM's OpenAI API, `/metrics` and the NIXL `kv_transfer_params` handshake
(a prefill request with `do_remote_decode: true` returns params; a decode request with
`do_remote_prefill: true` takes the KV-transfer latency instead of the prefill latency), but
generates no real tokens. Each process uses about 15 MiB and almost no CPU when idle.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from procs import LOOPBACK, ManagedProcess

HERE = Path(__file__).resolve().parent
SERVED_MODEL = "tiny"
# A decode sim answers its first token after TTFT when it computes the prompt itself, and after
# the (much shorter) KV-transfer latency when the request says the prefill was done remotely:
# the TTFT histogram then tells which requests carried prefill params.
TTFT = "400ms"
KV_TRANSFER_LATENCY = "5ms"
INTER_TOKEN_LATENCY = "20ms"


def ensure_sim() -> Path:
    """Build the simulator if needed (instant when cached); return the binary's path."""
    out = subprocess.run(
        [str(HERE / "install-llmd-sim.sh")], check=True, stdout=subprocess.PIPE, text=True
    )
    return Path(out.stdout.strip().splitlines()[-1])


def start_sim(
    binary: Path,
    port: int,
    log_path: Path,
    name: str = "sim",
    log_http: bool = True,
    extra_args: tuple[str, ...] = (),
    extra_env: dict[str, str] | None = None,
) -> ManagedProcess:
    """Start one simulator on loopback `port`, serving the model `tiny`.

    With `log_http` every request body is logged, so a test can read what the router sent.
    `extra_args` come last, so they override the defaults above them.
    """
    argv = [
        str(binary),
        "--port",
        str(port),
        "--model",
        SERVED_MODEL,
        "--served-model-name",
        SERVED_MODEL,
        "--force-dummy-tokenizer",
        "--mode",
        "random",
        "--seed",
        "1",
        "--max-num-seqs",
        "16",
        "--time-to-first-token",
        TTFT,
        "--kv-cache-transfer-latency",
        KV_TRANSFER_LATENCY,
        "--inter-token-latency",
        INTER_TOKEN_LATENCY,
    ]
    if log_http:
        argv.append("--log-http")
    argv += extra_args
    return ManagedProcess(
        name=f"{name}:{port}", argv=argv, log_path=log_path, port=port, env=extra_env or {}
    ).start()


def kv_cache_args(
    events_endpoint: str, blocks: int, block_size: int = 16
) -> tuple[tuple[str, ...], dict[str, str]]:
    """Arguments and environment for a simulator with a KV cache of `blocks` blocks that
    publishes KV-cache events to `events_endpoint` (it dials out: see KvRelay)."""
    args = ("--enable-kvcache", "--kv-cache-size", str(blocks), "--block-size", str(block_size),
            "--zmq-endpoint", events_endpoint, "--event-batch-size", "16")  # fmt: skip
    # The simulator needs a pod IP for its event topic; its hash seed is PYTHONHASHSEED.
    return args, {"POD_IP": "127.0.0.1", "PYTHONHASHSEED": "0"}


class KvRelay:
    """Gives a simulator vLLM's event topology. vLLM binds its PUB socket and routers connect
    to each engine; llm-d's simulator dials out to one address. The relay binds where the
    simulator dials (`inbound`) and re-publishes on a port routers connect to (`port`)."""

    def __init__(self) -> None:
        import threading

        import zmq

        self._ctx = zmq.Context()
        self._in = self._ctx.socket(zmq.XSUB)
        in_port = self._in.bind_to_random_port(f"tcp://{LOOPBACK}")
        self._out = self._ctx.socket(zmq.XPUB)
        self.port = self._out.bind_to_random_port(f"tcp://{LOOPBACK}")
        self.inbound = f"tcp://{LOOPBACK}:{in_port}"
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import zmq

        try:
            zmq.proxy(self._in, self._out)
        except zmq.ContextTerminated:
            self._in.close(0)  # sockets belong to this thread: close them here
            self._out.close(0)

    def close(self) -> None:
        self._ctx.term()  # ends the proxy, which closes its sockets
        self._thread.join(2)
