"""The shared fake engine (a test double) as a subprocess for the benchmark tests."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class FakeEngine:
    """A running fake engine on loopback; the benchmark talks to ``base_url``."""

    url: str

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def _call(self, path: str, body: dict[str, Any] | None = None) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method="POST" if data else "GET"
        )
        request.add_header("content-type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as response:
            payload: bytes = response.read()
            return payload

    def configure(self, changes: dict[str, Any]) -> None:
        """Change knobs live (faults, latencies) through ``POST /admin/config``."""
        self._call("/admin/config", changes)

    def stats(self) -> dict[str, Any]:
        """The engine's request log (``GET /admin/stats``)."""
        stats: dict[str, Any] = json.loads(self._call("/admin/stats"))
        return stats

    def generation_tokens(self) -> int:
        """Tokens the engine has streamed so far, from its vLLM-style /metrics counter."""
        text = self._call("/metrics").decode()
        found = re.findall(r"^vllm:generation_tokens_total(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.M)
        return int(sum(float(v) for v in found))


@contextmanager
def start_engine(ttft_ms: float, itl_ms: float, model: str = "tiny") -> Iterator[FakeEngine]:
    """Start ``python -m tests.doubles.fake_engine`` on a free port; stop it afterwards."""
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        command = [sys.executable, "-m", "tests.doubles.fake_engine", "--port", "0",
                   "--port-file", str(port_file), "--model", model,
                   "--ttft-ms", str(ttft_ms), "--itl-ms", str(itl_ms)]  # fmt: skip
        proc = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 30
            while not port_file.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"fake engine did not start: {proc.stderr.read() if proc.stderr else ''}"
                    )
                time.sleep(0.05)
            yield FakeEngine(f"http://127.0.0.1:{int(port_file.read_text())}")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
