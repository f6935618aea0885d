"""One container's process: started in its own session, logging to a file, stopped as a
container runtime stops it (SIGTERM to the main process, then SIGKILL to everything it left).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


class ContainerProcess:
    """A running container: `start()`, `wait()`, `stop(grace)`, `kill()`."""

    def __init__(
        self, argv: Sequence[str], env: Mapping[str, str], cwd: Path, log_path: Path
    ) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.cwd = cwd
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self.started_at = 0.0

    async def start(self) -> None:
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"--- podrunner: exec {self.argv}\n".encode())
            log.flush()
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        self.started_at = time.time()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def wait(self) -> int:
        assert self.proc is not None
        code = await self.proc.wait()
        # Whatever the main process left behind goes with the container.
        _signal_group(self.proc.pid, signal.SIGKILL)
        return code

    async def stop(self, grace_s: float) -> None:
        """SIGTERM the main process (as the runtime signals PID 1), SIGKILL after `grace_s`."""
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), max(grace_s, 0.0))
        except TimeoutError:
            _signal_group(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()
        _signal_group(self.proc.pid, signal.SIGKILL)

    def kill(self) -> None:
        if self.proc is not None:
            _signal_group(self.proc.pid, signal.SIGKILL)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
