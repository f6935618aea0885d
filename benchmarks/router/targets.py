"""What the benchmark sends load to: fake engines, and routers started in front of them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.router.procstat import format_cpus, set_tree_affinity
from tests.doubles.engine_proc import FakeEngine, start_fake_engine

ROOT = Path(__file__).resolve().parents[2]
PEER_VENV = ROOT / ".cache" / "bench-router" / "vllm-router-venv"
MODEL = "tiny"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EnginePool:
    """Fake engines (the test double) on loopback, pinned to the engine cores."""

    def __init__(self, count: int, cpus: list[int]) -> None:
        self.cpus = cpus
        self.engines: list[FakeEngine] = []
        for _ in range(count):
            engine = start_fake_engine(models=[MODEL], max_num_seqs=4096)
            assert engine.proc is not None
            set_tree_affinity(engine.proc.pid, cpus)
            self.engines.append(engine)

    @property
    def pids(self) -> list[int]:
        return [e.proc.pid for e in self.engines if e.proc is not None]

    def urls(self, which: str = "all") -> list[str]:
        """all, prefill (first half) or decode (second half) of the pool."""
        half = len(self.engines) // 2
        chosen = {
            "all": self.engines,
            "prefill": self.engines[:half],
            "decode": self.engines[half:],
        }[which]
        return [e.url for e in chosen]

    def configure(self, ttft_ms: float, itl_ms: float) -> None:
        for engine in self.engines:
            engine.admin_config(ttft_ms=ttft_ms, itl_ms=itl_ms)

    def stop(self) -> None:
        for engine in self.engines:
            engine.stop()


@dataclass
class RouterSpec:
    """How to start one router under test; `{port}` in argv is replaced by a free port."""

    name: str
    mode: str  # "plain" (compared with direct to all engines) or "pd" (with direct to decoders)
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ready_path: str = "/ready"
    has_pd_metrics: bool = False


class RouterProc:
    """A router process pinned with taskset; its whole process tree is measured and stopped."""

    def __init__(self, spec: RouterSpec, cpus: list[int]) -> None:
        self.spec = spec
        self.port = free_port()
        self.log_path = Path(tempfile.mkdtemp(prefix="bench-router-")) / "router.log"
        argv = [a.replace("{port}", str(self.port)) for a in spec.argv]
        argv = ["taskset", "-c", format_cpus(cpus), *argv]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **spec.env}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the ready path answers 200 and one streamed completion goes through."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.spec.name} exited:\n{self.log_text()}")
            if self._get(self.spec.ready_path) == 200 and self._probe():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.spec.name} not ready in {timeout}s:\n{self.log_text()}")
            time.sleep(0.2)

    def _get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(self.url + path, timeout=2) as resp:
                return int(resp.status)
        except (urllib.error.URLError, OSError):
            return 0

    def _probe(self) -> bool:
        body = {"model": MODEL, "prompt": "hi", "max_tokens": 2, "stream": True}
        req = urllib.request.Request(
            self.url + "/v1/completions",
            data=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return bool(resp.status == 200 and b"[DONE]" in resp.read())
        except (urllib.error.URLError, OSError):
            return False

    def metrics_text(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def pdstack_specs(pool: EnginePool, workers: int) -> list[RouterSpec]:
    """Our router: round robin, round robin with per-request logging, and disagg_prefill."""
    base = [sys.executable, "-m", "pdrouter.cli", "--host", "127.0.0.1", "--port", "{port}"]
    base += ["--workers", str(workers), "--log-level", "warning"]
    everyone = pool.urls("all")
    plain = ["--static-backends", ",".join(everyone), "--static-models"]
    plain += [",".join([MODEL] * len(everyone)), "--routing-logic", "roundrobin"]
    halves = pool.urls("prefill") + pool.urls("decode")
    roles = ["prefill"] * len(pool.urls("prefill")) + ["decode"] * len(pool.urls("decode"))
    pd = ["--static-backends", ",".join(halves), "--static-models", ",".join([MODEL] * len(halves))]
    pd += ["--static-roles", ",".join(roles), "--routing-logic", "disagg_prefill"]
    pd += ["--kv-transport", "nixl"]
    return [
        RouterSpec("pdstack-rr", "plain", base + plain),
        RouterSpec(
            "pdstack-rr-log",
            "plain",
            [*base, *plain, "--log-requests"],
            env={"PDSTACK_ROUTER_LOG_LEVEL": "info"},
        ),
        RouterSpec("pdstack-pd", "pd", base + pd, has_pd_metrics=True),
    ]


def vllm_router_specs(pool: EnginePool, workers: int) -> list[RouterSpec]:
    """The Rust `vllm-router` from PyPI, when `install_peers.sh` has put it under .cache/."""
    binary = PEER_VENV / "bin" / "vllm-router"
    if not binary.exists():
        return []
    common = [str(binary), "--host", "127.0.0.1", "--port", "{port}", "--log-level", "warning"]
    common += ["--prometheus-port", str(free_port()), "--prometheus-host", "127.0.0.1"]
    common += ["--disable-retries", "--disable-circuit-breaker"]
    plain = [*common, "--worker-urls", *pool.urls("all"), "--policy", "round_robin"]
    pd = [*common, "--vllm-pd-disaggregation", "--kv-connector", "nixl"]
    pd += ["--prefill-policy", "round_robin", "--decode-policy", "round_robin"]
    for url in pool.urls("prefill"):
        pd += ["--prefill", url]
    for url in pool.urls("decode"):
        pd += ["--decode", url]
    return [
        RouterSpec("vllm-router-rr", "plain", plain, ready_path="/health"),
        RouterSpec("vllm-router-pd", "pd", pd, ready_path="/health"),
    ]
