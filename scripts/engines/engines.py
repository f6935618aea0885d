"""Launch real vLLM CPU engines (and the tiny model they serve) for the demo and e2e tests.

    import engines
    engines.ensure_vllm()                      # cached venv, installs once
    model = engines.ensure_tiny_model()        # cached tiny Llama
    p = engines.start_vllm("prefill", port, core=0, side_channel_port=sp, log_path=log)
    p.wait_ready(); ...; p.stop()

Prefill and decode engines use NixlConnector over CPU memory (`kv_buffer_device: cpu`), each
with its own NIXL side-channel port; a `both` engine has no KV connector. The recipe and the
reasons for every setting are in docs/real-engines.md.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Literal

from procs import LOOPBACK, ROOT, ManagedProcess

HERE = Path(__file__).resolve().parent
VLLM_VENV = Path(os.environ.get("PDSTACK_VLLM_VENV", ROOT / ".cache" / "vllm-venv"))
TINY_MODEL = Path(os.environ.get("PDSTACK_TINY_MODEL", ROOT / ".cache" / "tiny-model-4k"))
SERVED_MODEL = "tiny"
# The tiny model's whole context: run_pd.sh's default conversation fits (build_tiny_model.py).
MAX_MODEL_LEN = 4096
# Seconds a prefill engine keeps KV blocks for a decoder that never pulls them; the default (30)
# keeps an orphaned prefill spinning a core for half a minute.
KV_LEASE_S = 5
# NIXL's UCX progress thread busy-polls with delay 0 (a whole core per engine, even idle); the
# start-up hook in pyhooks/ raises it to this many microseconds. 100 keeps transfers working.
NIXL_PTHR_DELAY_US = 100

Role = Literal["prefill", "decode", "both"]


def ensure_vllm() -> Path:
    """Install the vLLM environment if needed (instant when cached); return its python."""
    subprocess.run([str(HERE / "setup-vllm.sh")], check=True)
    return VLLM_VENV / "bin" / "python"


def ensure_tiny_model(out: Path = TINY_MODEL) -> Path:
    """Build the tiny model with the vLLM environment's python if needed; return its folder."""
    python = VLLM_VENV / "bin" / "python"
    subprocess.run([str(python), str(HERE / "build_tiny_model.py"), "--out", str(out)], check=True)
    return out


def kv_transfer_config(role: Role) -> dict[str, object] | None:
    """NixlConnector settings for a prefill (producer) or decode (consumer) engine."""
    if role == "both":
        return None
    config: dict[str, object] = {
        "kv_connector": "NixlConnector",
        "kv_role": "kv_producer" if role == "prefill" else "kv_consumer",
        "kv_buffer_device": "cpu",
    }
    if role == "prefill":
        config["kv_connector_extra_config"] = {"kv_lease_duration": KV_LEASE_S}
    return config


def kv_events_args(port: int, replay_port: int) -> tuple[str, ...]:
    """Publish KV-cache events (ZMQ PUB on `port`, replay ROUTER on `replay_port`, loopback)
    and report cached prompt tokens in usage, for the router's KV-event index."""
    config = {
        "enable_kv_cache_events": True,
        "publisher": "zmq",
        # vLLM binds the PUB socket only for a wildcard address (it connects to any other).
        "endpoint": f"tcp://*:{port}",
        "replay_endpoint": f"tcp://{LOOPBACK}:{replay_port}",
    }
    return ("--kv-events-config", json.dumps(config), "--enable-prompt-tokens-details")


def start_vllm(
    role: Role,
    port: int,
    core: int,
    side_channel_port: int,
    log_path: Path,
    model: Path = TINY_MODEL,
    extra_args: tuple[str, ...] = (),
    extra_env: dict[str, str] | None = None,
    otlp_endpoint: str | None = None,
) -> ManagedProcess:
    """Start one `vllm serve` for `role` on `port`, its compute pinned to `core`.

    Returns at once; call `.wait_ready()` (polls /health) and `.stop()` (stops the process
    group). The engine serves the model as `tiny` and listens on loopback only. With
    `otlp_endpoint` (an OTLP/gRPC URL) it exports a span per request, as service `vllm-<role>`.
    """
    argv = [
        str(VLLM_VENV / "bin" / "vllm"),
        "serve",
        str(model),
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--served-model-name",
        SERVED_MODEL,
        "--max-model-len",
        str(MAX_MODEL_LEN),
        "--dtype",
        "bfloat16",
        "--enforce-eager",  # skips ~30 s of torch.compile; same speed for a tiny model
        *extra_args,
    ]
    config = kv_transfer_config(role)
    if config is not None:
        argv += ["--kv-transfer-config", json.dumps(config)]
    if otlp_endpoint is not None:
        argv += ["--otlp-traces-endpoint", otlp_endpoint]
    env = {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB; 1 GiB holds ~2M tokens of this model
        "VLLM_CPU_OMP_THREADS_BIND": str(core),
        # Keep every socket on loopback: vLLM's internal queues, NIXL's handshake, UCX.
        "VLLM_HOST_IP": LOOPBACK,
        "VLLM_NIXL_SIDE_CHANNEL_HOST": LOOPBACK,
        "UCX_NET_DEVICES": "lo",
        "VLLM_NIXL_SIDE_CHANNEL_PORT": str(side_channel_port),
        "NIXL_PTHR_DELAY_US": str(NIXL_PTHR_DELAY_US),
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(HERE / "pyhooks"), os.environ.get("PYTHONPATH", "")) if p
        ),
    }
    env.update(extra_env or {})
    if otlp_endpoint is not None:
        # Spans leave in batches every 5 s by default; tests and the demo want them sooner.
        env |= {"OTEL_SERVICE_NAME": f"vllm-{role}", "OTEL_BSP_SCHEDULE_DELAY": "200"}
    return ManagedProcess(
        name=f"vllm-{role}:{port}", argv=argv, log_path=log_path, port=port, env=env
    ).start()
