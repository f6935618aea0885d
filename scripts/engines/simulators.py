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

from procs import ManagedProcess

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
    binary: Path, port: int, log_path: Path, name: str = "sim", log_http: bool = True
) -> ManagedProcess:
    """Start one simulator on loopback `port`, serving the model `tiny`.

    With `log_http` every request body is logged, so a test can read what the router sent.
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
    return ManagedProcess(name=f"{name}:{port}", argv=argv, log_path=log_path, port=port).start()
