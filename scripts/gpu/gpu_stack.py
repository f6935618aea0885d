"""Start a prefill + decode pair and the pdstack router with what the chart renders.

The engine and router arguments come from scripts/gpu/chart-engines.json (rendered from the
shipped values files by render-chart-args.sh). `one_machine()` lists every substitution made to
run both engines and the router on one machine; each is recorded in the results.

Modes: "gpu" (vLLM on the GPU, the normal case), "cpu" (the CPU vLLM build of .cache/vllm-venv,
NIXL only: checks the script's own logic), "fake" (the project's fake engines: LMCache logic).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "scripts" / "engines"))
from procs import LOOPBACK, ManagedProcess, free_port  # noqa: E402

SERVED = "tiny"
# Two engines share one GPU: fixed KV cache sizes skip vLLM's memory profiling, which is what
# makes starting both at once safe (reference run, 2026-12-01).
GPU_MEMORY = ["--gpu-memory-utilization", "0.3", "--kv-cache-memory-bytes", "2147483648"]
# Router flags that belong to Kubernetes or to the pod, replaced by static discovery on loopback.
_ROUTER_DROP = {
    "--host": 1,
    "--port": 1,
    "--service-discovery": 1,
    "--k8s-namespace": 1,
    "--k8s-label-selector": 1,
    "--k8s-port": 1,
    "--log-format": 1,
    "--pd-proxy-host": 1,
    "--pd-proxy-port": 1,
}


@dataclass
class Stack:
    """The processes of one connector's run and what was substituted to start them."""

    connector: str
    prefill: ManagedProcess
    decode: ManagedProcess
    router: ManagedProcess | None = None
    substitutions: list[str] = field(default_factory=list)
    proxy_port: int = 0
    chart: dict[str, Any] = field(default_factory=dict)

    def engines(self) -> list[ManagedProcess]:
        return [self.prefill, self.decode]

    def stop(self) -> None:
        for proc in (self.router, self.prefill, self.decode):
            if proc is not None:
                proc.stop(grace=10.0)


def _replace_flag(args: list[str], flag: str, value: str | None) -> list[str]:
    """Set (or with None remove) `flag VALUE` in an argument list."""
    out: list[str] = []
    skip = False
    for i, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if arg == flag:
            skip = i + 1 < len(args)
            continue
        out.append(arg)
    return out if value is None else [*out, flag, value]


def _engine_argv(
    mode: str, python: str, role_cfg: dict[str, Any], model_dir: Path, port: int, cpu_kv: bool
) -> list[str]:
    args = list(role_cfg["args"])
    args = _replace_flag(args, "--host", LOOPBACK)
    args = _replace_flag(args, "--port", str(port))
    args = _replace_flag(args, "--served-model-name", SERVED)
    if mode == "gpu":
        args = _replace_flag(args, "--gpu-memory-utilization", None)
        args += GPU_MEMORY
    else:  # the CPU build's attention needs blocks of a multiple of 32 tokens
        args = _replace_flag(args, "--block-size", "32")
    if "--enforce-eager" not in args:
        args.append("--enforce-eager")
    if cpu_kv:  # the CPU build keeps KV in host memory
        idx = args.index("--kv-transfer-config")
        kv = json.loads(args[idx + 1])
        kv["kv_buffer_device"] = "cpu"
        args[idx + 1] = json.dumps(kv, separators=(",", ":"))
    return [python, "-m", "vllm.entrypoints.cli.main", "serve", str(model_dir), *args]


def one_machine(mode: str, connector: str) -> list[str]:
    """Every change made to the chart's rendering to run the pair on one machine."""
    subs = [
        "model: the chart's modelURL -> a local 2-layer random-weight Llama, served as 'tiny'",
        "--host 0.0.0.0 -> 127.0.0.1; --port 8000 -> a free port per engine",
        "--enforce-eager added (no CUDA graphs / torch.compile: start-up time, not behaviour)",
        "VLLM_ALLOW_LONG_MAX_MODEL_LEN=1: the chart's --max-model-len 8192 kept above the tiny "
        "model's 2048 positions (prompts stay far below both)",
    ]
    if mode == "gpu":
        subs.append(
            "--gpu-memory-utilization 0.9 -> 0.3 plus --kv-cache-memory-bytes 2 GiB per engine "
            "(two engines on one GPU)"
        )
    if connector == "nixl":
        subs.append("VLLM_NIXL_SIDE_CHANNEL_HOST=127.0.0.1, ports 5600/5601 (pod IP, 5600)")
        if mode == "cpu":
            subs.append("kv_buffer_device cuda -> cpu, --block-size 16 -> 32 (the CPU build)")
    else:
        subs.append(
            "LMCache config: pd_proxy_host (router Service) and pd_peer_host (@POD_IP@) -> "
            "127.0.0.1, pd_proxy_port -> the router's free port"
        )
    subs.append(
        "router: static discovery of the two engines on loopback instead of Kubernetes; "
        "--pd-proxy-host $(POD_IP) -> 127.0.0.1"
    )
    return subs


def start_pair(
    connector: str,
    mode: str,
    chart: dict[str, Any],
    model_dir: Path,
    work: Path,
    python: str,
    proxy_port: int,
) -> Stack:
    """Launch prefill and decode (not waiting for them)."""
    cfg = chart[connector]["engines"]
    procs: dict[str, ManagedProcess] = {}
    for i, role in enumerate(("prefill", "decode")):
        role_cfg = cfg[role]
        port = free_port()
        env = dict(role_cfg["env"])
        env.update(HF_HUB_OFFLINE="1", VLLM_ALLOW_LONG_MAX_MODEL_LEN="1", VLLM_HOST_IP=LOOPBACK)
        env["VLLM_USE_FLASHINFER_SAMPLER"] = "0"  # FlashInfer is not installed
        if connector == "nixl":
            env.update(
                VLLM_NIXL_SIDE_CHANNEL_HOST=LOOPBACK,
                VLLM_NIXL_SIDE_CHANNEL_PORT=str(5600 + i),
            )
        lmc = role_cfg.get("lmcache_config")
        if lmc is not None:
            lmc = dict(lmc)
            if "pd_proxy_host" in lmc:
                lmc["pd_proxy_host"] = LOOPBACK
                lmc["pd_proxy_port"] = proxy_port
            if lmc.get("pd_peer_host") == "@POD_IP@":
                lmc["pd_peer_host"] = LOOPBACK
            path = work / f"lmcache-{role}.yaml"
            path.write_text(json.dumps(lmc, indent=1))  # JSON is YAML
            env["LMCACHE_CONFIG_FILE"] = str(path)
        cpu_kv = mode == "cpu"
        if mode == "cpu":
            env.update(
                VLLM_CPU_KVCACHE_SPACE="1",
                VLLM_CPU_OMP_THREADS_BIND=str(i),
                UCX_NET_DEVICES="lo",
                NIXL_PTHR_DELAY_US="100",
                PYTHONPATH=str(ROOT / "scripts" / "engines" / "pyhooks"),
            )
        argv = _engine_argv(mode, python, role_cfg, model_dir, port, cpu_kv)
        procs[role] = ManagedProcess(
            f"{connector}-{role}", argv, work / f"{connector}-{role}.log", port, env
        ).start()
    stack = Stack(connector, procs["prefill"], procs["decode"], proxy_port=proxy_port)
    stack.substitutions = one_machine(mode, connector)
    stack.chart = cfg
    return stack


def start_fake_pair(connector: str, work: Path, proxy_port: int) -> Stack:
    """The project's fake engines (tests/doubles), for the LMCache logic without a GPU."""
    procs: dict[str, ManagedProcess] = {}
    for role in ("prefill", "decode"):
        port = free_port()
        argv = [sys.executable, "-m", "tests.doubles.fake_engine", "--port", str(port)]
        argv += ["--model", SERVED, "--role", role, "--itl-ms", "2"]
        if connector == "lmcache":
            argv += ["--lmcache-pd-role", "sender" if role == "prefill" else "receiver"]
            if role == "prefill":
                argv += ["--lmcache-proxy-port", str(proxy_port)]
        procs[role] = ManagedProcess(
            f"{connector}-{role}", argv, work / f"{connector}-{role}.log", port,
            {"PYTHONPATH": str(ROOT)},
        ).start()  # fmt: skip
    stack = Stack(connector, procs["prefill"], procs["decode"], proxy_port=proxy_port)
    stack.substitutions = ["fake engines (tests/doubles): router logic only, no KV moves"]
    return stack


def router_argv(
    stack: Stack, chart: dict[str, Any], python: str, port: int, logic: str | None = None
) -> list[str]:
    """The chart's router arguments with static discovery of the pair (logic: override
    --routing-logic, e.g. roundrobin for the aggregated baseline)."""
    args = list(chart[stack.connector]["router"]["args"])
    out: list[str] = []
    skip = 0
    for arg in args:
        if skip:
            skip -= 1
            continue
        if arg in _ROUTER_DROP:
            skip = _ROUTER_DROP[arg]
            continue
        out.append(arg)
    out += ["--host", LOOPBACK, "--port", str(port), "--log-format", "text"]
    out += ["--static-backends", f"{stack.prefill.url},{stack.decode.url}"]
    out += ["--static-models", f"{SERVED},{SERVED}", "--static-roles", "prefill,decode"]
    out = _replace_flag(out, "--service-discovery", "static")
    out = _replace_flag(out, "--engine-scrape-interval", "1")
    if stack.connector == "lmcache":
        init = stack.chart.get("decode", {}).get("lmcache_config", {}) or {}
        out += ["--static-lmcache-init-ports", f",{init.get('pd_peer_init_port', 7300)}"]
        out += ["--static-lmcache-alloc-ports", f",{init.get('pd_peer_alloc_port', 7400)}"]
        out += ["--pd-proxy-host", LOOPBACK, "--pd-proxy-port", str(stack.proxy_port)]
    if logic is not None:
        out = _replace_flag(out, "--routing-logic", logic)
        if logic != "disagg_prefill":
            out = _drop_pd_flags(out)
    return [python, "-m", "pdrouter.cli", *out]


def _drop_pd_flags(args: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg.startswith(("--pd-", "--prefill-", "--decode-", "--kv-transport", "--static-lmc")):
            skip = arg != "--pd-override-remote-host"
            continue
        out.append(arg)
    return out


def start_router(
    stack: Stack, chart: dict[str, Any], python: str, work: Path, env: dict[str, str],
    logic: str | None = None, name: str = "router",
) -> ManagedProcess:  # fmt: skip
    port = free_port()
    argv = router_argv(stack, chart, python, port, logic)
    proc = ManagedProcess(
        f"{stack.connector}-{name}", argv, work / f"{stack.connector}-{name}.log", port, env,
        ready_path="/ready",
    ).start()  # fmt: skip
    return proc
