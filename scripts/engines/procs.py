"""Start, wait for and stop the local server processes that the demo and the e2e tests share.

Standard library only, so any Python (the router's .venv, the vLLM venv, a bare 3.11) can import
it. Every process gets its own session (setsid) and is stopped by signalling its whole process
group: a vLLM server spawns an engine-core and a worker process that must go down with it.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"

_LIVE: set[ManagedProcess] = set()


def free_port() -> int:
    """An ephemeral loopback port that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """GET `url` and return its HTTP status, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except (OSError, ValueError):
        return None


def post_json(url: str, body: Mapping[str, object], timeout: float = 60.0) -> dict[str, object]:
    """POST a JSON body and return the decoded JSON answer (raises on HTTP errors)."""
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        answer: dict[str, object] = json.loads(resp.read())
        return answer


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def scrape_metrics(url: str, timeout: float = 5.0) -> dict[str, float]:
    """Prometheus text from `url` as {'name{labels}': value}; `name` alone when unlabelled."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        text = resp.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            name, labels, value = match.groups()
            samples[name + (labels or "")] = float(value)
    return samples


def metric_sum(samples: Mapping[str, float], name: str, **labels: str) -> float:
    """Sum of every sample of `name` whose labels include all of `labels`."""
    total = 0.0
    for key, value in samples.items():
        base, _, rest = key.partition("{")
        if base != name:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += value
    return total


@dataclass(eq=False)
class ManagedProcess:
    """A server process in its own process group, logging to a file."""

    name: str
    argv: Sequence[str]
    log_path: Path
    port: int
    env: Mapping[str, str] = field(default_factory=dict)
    ready_path: str = "/health"
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    ready_after_s: float | None = None

    @property
    def url(self) -> str:
        """Base URL on loopback."""
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> ManagedProcess:
        """Launch the process (does not wait for it to be ready)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n--- starting {self.name}: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                start_new_session=True,  # own process group: stop() takes its children too
            )
        self.started_at = time.monotonic()
        _LIVE.add(self)
        return self

    def alive(self) -> bool:
        """True while the main process has not exited."""
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = 120.0, interval: float = 0.5) -> float:
        """Poll `ready_path` until it answers 200; return seconds since start."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
            if http_status(self.url + self.ready_path) == 200:
                self.ready_after_s = time.monotonic() - self.started_at
                return self.ready_after_s
            time.sleep(interval)
        raise TimeoutError(f"{self.name} not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM the process group, SIGKILL it after `grace` seconds. Idempotent."""
        _LIVE.discard(self)
        if self.proc is None:
            return
        pgid = self.proc.pid  # session leader: its pid is the group id
        _signal_group(pgid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _signal_group(pgid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        # Children (engine core, workers) may outlive the leader by a moment.
        deadline = time.monotonic() + grace
        while _group_exists(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
        _signal_group(pgid, signal.SIGKILL)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL the whole group at once (a crash, as a failure test wants it)."""
        if self.proc is not None:
            _signal_group(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.proc = None
        _LIVE.discard(self)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@atexit.register
def _stop_leftovers() -> None:
    # A test run or demo that dies half-way must not leave engines eating the shared CPU.
    for proc in list(_LIVE):
        proc.stop(grace=5.0)
