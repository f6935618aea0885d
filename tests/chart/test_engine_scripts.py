"""The shell the chart puts in engine pods, run here as rendered: the preStop drain against an
HTTP /metrics endpoint, and values-cpu.yaml's NIXL install in front of `vllm serve`.

The endpoint is a test double of vLLM's /metrics (the two gauges the drain reads); pip and vllm
are stand-ins that record their arguments. The scripts themselves are the chart's, unchanged.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.helm import ROOT, ROUTER_IMAGE, helm_template
from tests.harness.router_proc import free_port

pytestmark = pytest.mark.chart


def _engine_container(*args: str) -> dict[str, Any]:
    run = helm_template(*args, *ROUTER_IMAGE, "--show-only", "templates/deployment-engine.yaml")
    assert run.returncode == 0, run.stderr
    deployment = next(d for d in yaml.safe_load_all(run.stdout) if d)
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


class _FakeVllmMetrics:
    """vLLM's /metrics as far as the drain reads it: running and waiting request gauges."""

    def __init__(self) -> None:
        self.running = 1.0
        self.scrapes = 0
        self.scraped = threading.Condition()

    def body(self) -> bytes:
        lines = [
            "# HELP vllm:num_requests_running Number of requests in model execution batches.",
            "# TYPE vllm:num_requests_running gauge",
            f'vllm:num_requests_running{{engine="0",model_name="m"}} {self.running}',
            f'vllm:num_requests_waiting{{engine="0",model_name="m"}} {0.0}',
        ]
        return ("\n".join(lines) + "\n").encode()


@contextmanager
def _metrics_server(fake: _FakeVllmMetrics) -> Iterator[int]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = fake.body()
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            with fake.scraped:
                fake.scrapes += 1
                fake.scraped.notify_all()

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def _drain_command(port: int) -> list[str]:
    container = _engine_container(
        "-f",
        str(ROOT / "values" / "values-pd.yaml"),
        "--set",
        f"servingEngineSpec.containerPort={port}",
        "--set",
        "servingEngineSpec.drain.delaySeconds=0",
    )
    command: list[str] = container["lifecycle"]["preStop"]["exec"]["command"]
    return command


def test_pre_stop_waits_while_the_engine_has_requests_and_ends_when_idle() -> None:
    fake = _FakeVllmMetrics()
    with _metrics_server(fake) as port:
        proc = subprocess.Popen(_drain_command(port))
        try:
            with fake.scraped:
                assert fake.scraped.wait_for(lambda: fake.scrapes >= 3, timeout=60)
            assert proc.poll() is None, "the drain ended while a request was still running"
            fake.running = 0.0
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_pre_stop_ends_when_metrics_cannot_be_read() -> None:
    # Nothing listens on the port: a broken scrape must not hold the pod until the grace period.
    proc = subprocess.run(_drain_command(free_port()), timeout=60, check=False)
    assert proc.returncode == 0


def _stub(directory: Path, name: str, log: Path, exit_code: int = 0) -> None:
    script = directory / name
    script.write_text(
        f'#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done > {log}\nexit {exit_code}\n'
    )
    script.chmod(0o755)


@pytest.mark.parametrize("pip_fails", [False, True], ids=["pip-ok", "pip-fails"])
def test_values_cpu_installs_nixl_then_execs_vllm_with_the_rendered_args(
    tmp_path: Path, pip_fails: bool
) -> None:
    container = _engine_container("-f", str(ROOT / "values" / "values-cpu.yaml"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _stub(bin_dir, "pip", tmp_path / "pip.args", exit_code=1 if pip_fails else 0)
    _stub(bin_dir, "vllm", tmp_path / "vllm.args")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    run = subprocess.run(
        [*container["command"], *container["args"]], env=env, timeout=60, check=False
    )
    pip_args = (tmp_path / "pip.args").read_text().splitlines()
    assert pip_args == [
        "install",
        "--quiet",
        "--no-cache-dir",
        "--no-deps",
        "nixl==1.5.1",
        "nixl-cu12==1.5.1",
    ]
    if pip_fails:
        # No engine without NIXL: the pod fails and restarts instead of serving without KV transfer.
        assert run.returncode != 0
        assert not (tmp_path / "vllm.args").exists()
    else:
        assert run.returncode == 0
        vllm_args = (tmp_path / "vllm.args").read_text().splitlines()
        assert vllm_args == container["args"]
        assert vllm_args[0] == "serve" and "--kv-transfer-config" in vllm_args
