"""Engines and routers as the e2e tests hold them: restartable engine slots, a router factory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import engines
import procs
import router_proc

ENGINE_START_TIMEOUT = 300.0  # 30-50 s on an idle 2-core box; 130-190 s seen on a loaded one


@dataclass
class EngineSlot:
    """One engine role at a fixed port, so it can be stopped and started again in place."""

    role: engines.Role
    core: int
    port: int
    side_channel_port: int
    log_path: Path
    process: procs.ManagedProcess | None = None
    kv_events_port: int = 0  # 0: the engine publishes no KV-cache events
    kv_replay_port: int = 0
    otlp_endpoint: str | None = None  # where the engine exports its spans (the session collector)

    @property
    def url(self) -> str:
        """Base URL of the engine."""
        return f"http://{procs.LOOPBACK}:{self.port}"

    def start(self) -> None:
        """Start the engine (returns before it is ready)."""
        extra_args: tuple[str, ...] = ()
        extra_env: dict[str, str] = {}
        if self.kv_events_port:
            extra_args = engines.kv_events_args(self.kv_events_port, self.kv_replay_port)
            extra_env["VLLM_SERVER_DEV_MODE"] = "1"  # POST /reset_prefix_cache
        self.process = engines.start_vllm(
            self.role,
            self.port,
            self.core,
            self.side_channel_port,
            self.log_path,
            extra_args=extra_args,
            extra_env=extra_env,
            otlp_endpoint=self.otlp_endpoint,
        )

    def wait_ready(self) -> float:
        """Block until /health answers; seconds since start."""
        assert self.process is not None
        return self.process.wait_ready(timeout=ENGINE_START_TIMEOUT)

    def kill(self) -> None:
        """Crash the engine: SIGKILL its whole process group."""
        if self.process is not None:
            self.process.kill()
            self.process = None

    def stop(self) -> None:
        """Stop the engine gracefully."""
        if self.process is not None:
            self.process.stop()
            self.process = None

    def ensure_running(self) -> None:
        """Start the engine again if a test stopped it, and wait for it."""
        if self.process is None or not self.process.alive():
            self.start()
            self.wait_ready()

    def metrics(self) -> dict[str, float]:
        """The engine's Prometheus samples."""
        return procs.scrape_metrics(self.url + "/metrics")


@dataclass
class EnginePair:
    """A prefill engine (core 0) and a decode engine (core 1) joined by NIXL over CPU memory."""

    prefill: EngineSlot
    decode: EngineSlot


class RouterFactory:
    """Builds routers for a test; remembers them so nothing outlives the session."""

    def __init__(self, logs: Path) -> None:
        self._logs = logs
        self._started: list[procs.ManagedProcess] = []

    def start(
        self,
        backends: list[str],
        roles: list[str],
        routing_logic: str,
        extra_args: tuple[str, ...] = (),
        wait_ready: bool = True,
    ) -> procs.ManagedProcess:
        """Start one router; by default wait until its /ready says every model is routable."""
        port = procs.free_port()
        router = router_proc.start_router(
            port,
            backends,
            roles,
            self._logs / f"router-{port}.log",
            routing_logic,
            extra_args=extra_args,
        )
        self._started.append(router)
        if wait_ready:
            router.wait_ready(timeout=60.0)
        return router

    def stop_all(self) -> None:
        """Stop every router this factory started."""
        for router in self._started:
            router.stop()
