"""What the benchmark sends load to: fake engines, and routers started in front of them."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
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
from typing import IO

from benchmarks.router.procstat import format_cpus

ROOT = Path(__file__).resolve().parents[2]
PEER_VENV = ROOT / ".cache" / "bench-router" / "vllm-router-venv"
MODEL = "tiny"
_ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EnginePool:
    """Fast fake engines (benchmarks/router/fast_engine.py) on loopback, pinned to the engine
    cores; the first half serves as prefill, the second as decode in PD scenarios."""

    def __init__(self, count: int, cpus: list[int]) -> None:
        self.cpus = cpus
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ports: list[int] = []
        self._logs: list[IO[bytes]] = []
        tmp = Path(tempfile.mkdtemp(prefix="bench-engines-"))
        self._dir = tmp
        files = []
        for i in range(count):
            port_file = tmp / f"port-{i}"
            argv = ["taskset", "-c", format_cpus(cpus), sys.executable, "-m"]
            argv += ["benchmarks.router.fast_engine", "--port-file", str(port_file)]
            argv += ["--engine-id", f"engine-{i}"]
            log = open(tmp / f"engine-{i}.log", "ab")  # noqa: SIM115 - closed in stop()
            self._logs.append(log)
            self.procs.append(
                subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=_ENV)
            )
            files.append(port_file)
        deadline = time.monotonic() + 30
        for proc, port_file in zip(self.procs, files, strict=True):
            while not port_file.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"fast engine did not start; see {tmp}")
                time.sleep(0.05)
            self.ports.append(int(port_file.read_text()))

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def urls(self, which: str = "all") -> list[str]:
        """all, prefill (first half) or decode (second half) of the pool."""
        urls = [f"http://127.0.0.1:{port}" for port in self.ports]
        half = len(urls) // 2
        return {"all": urls, "prefill": urls[:half], "decode": urls[half:]}[which]

    def configure(self, ttft_ms: float, itl_ms: float, kv_ms: float = 0.0) -> None:
        body = json.dumps({"ttft_ms": ttft_ms, "itl_ms": itl_ms, "kv_ms": kv_ms}).encode()
        for url in self.urls():
            req = urllib.request.Request(url + "/admin/config", data=body, method="POST")
            with urllib.request.urlopen(req, timeout=5) as resp:
                resp.read()

    def stats(self) -> dict[str, int]:
        """Counters summed over engines (requests, prefill, decode, bad_decode, not_found)."""
        total: dict[str, int] = {}
        for url in self.urls():
            with urllib.request.urlopen(url + "/admin/stats", timeout=5) as resp:
                for key, value in json.loads(resp.read()).items():
                    total[key] = total.get(key, 0) + int(value)
        return total

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in self._logs:
            log.close()
        shutil.rmtree(self._dir, ignore_errors=True)


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
                text = self.log_text()
                self.stop()
                raise RuntimeError(f"{self.spec.name} not ready in {timeout}s:\n{text}")
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
        self._stop()
        shutil.rmtree(self.log_path.parent, ignore_errors=True)

    def _stop(self) -> None:
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


def pdstack_spec(pool: EnginePool, mode: str, workers: int) -> RouterSpec:
    """Our router, no per-request logs: roundrobin (plain) or disagg_prefill with NIXL (pd)."""
    argv = [sys.executable, "-m", "pdrouter.cli", "--host", "127.0.0.1", "--port", "{port}"]
    argv += ["--workers", str(workers), "--log-level", "warning"]
    if mode == "plain":
        urls = pool.urls("all")
        argv += ["--static-backends", ",".join(urls), "--routing-logic", "roundrobin"]
        argv += ["--static-models", ",".join([MODEL] * len(urls))]
        return RouterSpec(f"pdstack-{mode}", mode, argv)
    urls = pool.urls("prefill") + pool.urls("decode")
    roles = ["prefill"] * len(pool.urls("prefill")) + ["decode"] * len(pool.urls("decode"))
    argv += ["--static-backends", ",".join(urls), "--static-models", ",".join([MODEL] * len(urls))]
    argv += ["--static-roles", ",".join(roles), "--routing-logic", "disagg_prefill"]
    argv += ["--kv-transport", "nixl"]
    return RouterSpec(f"pdstack-{mode}", mode, argv, has_pd_metrics=True)


def vllm_router_binary() -> Path | None:
    """The Rust `vllm-router` from PyPI: $VLLM_ROUTER_BIN, or what install_peers.sh installed."""
    env = os.environ.get("VLLM_ROUTER_BIN")
    binary = Path(env) if env else PEER_VENV / "bin" / "vllm-router"
    return binary if binary.exists() else None


def vllm_router_spec(pool: EnginePool, mode: str, binary: Path) -> RouterSpec:
    """The Rust router against the same engines (its worker threads follow its cpu set)."""
    argv = [str(binary), "--host", "127.0.0.1", "--port", "{port}", "--log-level", "warning"]
    argv += ["--prometheus-port", str(free_port()), "--prometheus-host", "127.0.0.1"]
    argv += ["--disable-retries", "--disable-circuit-breaker"]
    if mode == "plain":
        argv += ["--worker-urls", *pool.urls("all"), "--policy", "round_robin"]
        return RouterSpec(f"vllm-router-{mode}", mode, argv, ready_path="/health")
    argv += ["--vllm-pd-disaggregation", "--kv-connector", "nixl"]
    argv += ["--prefill-policy", "round_robin", "--decode-policy", "round_robin"]
    for url in pool.urls("prefill"):
        argv += ["--prefill", url]
    for url in pool.urls("decode"):
        argv += ["--decode", url]
    return RouterSpec(f"vllm-router-{mode}", mode, argv, ready_path="/health")
