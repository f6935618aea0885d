"""Start and control fake engine processes (the test double in fake_engine.py) from tests.

    eng = start_fake_engine(models=["tiny"], ttft_ms=20, role="prefill")
    eng.url, eng.port; eng.admin_config(faults={"http_error": {"status": 503}})
    eng.stats(); eng.restart(); eng.stop()

Control calls are synchronous (stdlib urllib) so they work from sync and async tests alike.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
_LIST_KNOBS = ("models", "model")


def knobs_to_argv(knobs: dict[str, Any]) -> list[str]:
    """Turn keyword knobs (``ttft_ms=20``, ``models=["a"]``, ``legacy_metrics=True``) into flags."""
    argv: list[str] = []
    for key, value in knobs.items():
        if value is None:
            continue
        if key in _LIST_KNOBS:
            names = [value] if isinstance(value, str) else list(value)
            argv += ["--model", ",".join(names)]
        elif key == "faults":
            for mode, opts in dict(value).items():
                parts = [mode] + [f"{k}={v}" for k, v in (opts or {}).items()]
                argv += ["--fault", ";".join(parts)]
        elif isinstance(value, bool):
            if value:
                argv.append("--" + key.replace("_", "-"))
        else:
            argv += ["--" + key.replace("_", "-"), str(value)]
    return argv


class FakeEngine:
    """One fake engine process on loopback; restartable on the same port."""

    def __init__(self, knobs: dict[str, Any], startup_timeout: float = 20.0) -> None:
        self.knobs = dict(knobs)
        self.port = 0
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._spawned_at = 0.0
        self._dir = tempfile.mkdtemp(prefix="fake-engine-")
        self.log_path = Path(self._dir) / "engine.log"

    @property
    def url(self) -> str:
        scheme = "https" if self.knobs.get("tls_cert") else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self) -> FakeEngine:
        """Spawn the process and wait until it answers HTTP."""
        self.spawn()
        return self.wait_ready()

    def spawn(self) -> None:
        """Spawn without waiting (start many, then ``wait_ready`` each: faster startup)."""
        port_file = Path(self._dir) / "port"
        port_file.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "tests.doubles.fake_engine", "--host", "127.0.0.1"]
        argv += ["--port", str(self.port), "--port-file", str(port_file)]
        argv += knobs_to_argv(self.knobs)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._spawned_at = time.monotonic()

    def wait_ready(self) -> FakeEngine:
        assert self.proc is not None, "spawn() first"
        port_file = Path(self._dir) / "port"
        deadline = self._spawned_at + self.startup_timeout
        while not port_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"fake engine exited early:\n{self.log_text()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"fake engine did not start:\n{self.log_text()}")
            time.sleep(0.02)
        self.port = int(port_file.read_text())
        while True:  # listening already; wait until it answers HTTP
            try:
                self._call("GET", "/admin/config")
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- control -------------------------------------------------------------------------
    def _call(self, method: str, path: str, body: Any = None, timeout: float = 5.0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        tls = None
        if self.knobs.get("tls_cert"):  # serving HTTPS with a test certificate: trust it
            tls = ssl.create_default_context(cafile=self.knobs["tls_cert"])
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=tls) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{method} {path}: {exc.code} {exc.read()!r}") from exc

    def admin_config(self, **changes: Any) -> dict[str, Any]:
        """Change knobs live (``faults={...}``, ``ttft_ms=...``); returns the new config."""
        if not changes:
            return dict(self._call("GET", "/admin/config"))
        return dict(self._call("POST", "/admin/config", changes))

    def set_faults(self, **faults: dict[str, Any] | None) -> dict[str, Any]:
        """Replace the active faults: ``set_faults(http_error={"status": 503, "count": 1})``."""
        return self.admin_config(faults={m: (o or {}) for m, o in faults.items()})

    def stats(self) -> dict[str, Any]:
        return dict(self._call("GET", "/admin/stats"))

    def reset(self) -> dict[str, Any]:
        """Back to startup knobs with empty counters, log and held KV."""
        return dict(self._call("POST", "/admin/reset"))

    def metrics_text(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (graceful), then SIGKILL if it does not exit in time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: the engine vanishes without closing connections gracefully."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self._signal(signal.SIGKILL)
        self.proc.wait(5)

    def restart(self) -> FakeEngine:
        """Stop and start again on the same port (the URL stays valid)."""
        self.stop()
        return self.start()

    def _signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)  # own session: the group is just this engine

    def __enter__(self) -> FakeEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_fake_engine(**knobs: Any) -> FakeEngine:
    """Spawn a fake engine on a free loopback port and wait until it answers."""
    return FakeEngine(knobs).start()


def start_fake_engines(count: int, **knobs: Any) -> list[FakeEngine]:
    """Start ``count`` engines with the same knobs in parallel (e.g. for benchmarks)."""
    engines = [FakeEngine(knobs) for _ in range(count)]
    for engine in engines:
        engine.spawn()
    try:
        return [engine.wait_ready() for engine in engines]
    except Exception:
        for engine in engines:
            engine.kill()
        raise
