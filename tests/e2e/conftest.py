"""Fixtures for end-to-end tests against real vLLM CPU engines and llm-d's simulator.

The engines, the tiny model and the simulator are installed by the project's own scripts in
scripts/engines (cached under .cache/ and .tools/). A missing install is a failure, not a skip:
set PDSTACK_SKIP_E2E=1 to skip these tests on purpose.

At most two vLLM engines run at once (one pinned to each core): the session keeps one prefill
and one decode engine up and the tests share them; failure tests restart them on the same ports.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "engines"))

import engines  # noqa: E402
import procs  # noqa: E402
import router_proc  # noqa: E402
import simulators  # noqa: E402

SKIP = os.environ.get("PDSTACK_SKIP_E2E") == "1"
ENGINE_START_TIMEOUT = 180.0  # observed 30-50 s for a pair; generous for a loaded CI box


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in tests/e2e is an e2e test, and skipped when PDSTACK_SKIP_E2E=1."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)
            if SKIP:
                item.add_marker(pytest.mark.skip(reason="PDSTACK_SKIP_E2E=1"))


@pytest.fixture(scope="session")
def e2e_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder for every process log of this session (printed in failure messages)."""
    return tmp_path_factory.mktemp("e2e-logs")


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The vLLM environment and the tiny model, installed on first use."""
    engines.ensure_vllm()
    return engines.ensure_tiny_model()


@dataclass
class EngineSlot:
    """One engine role at a fixed port, so it can be stopped and started again in place."""

    role: engines.Role
    core: int
    port: int
    side_channel_port: int
    log_path: Path
    process: procs.ManagedProcess | None = None

    @property
    def url(self) -> str:
        """Base URL of the engine."""
        return f"http://{procs.LOOPBACK}:{self.port}"

    def start(self) -> None:
        """Start the engine (returns before it is ready)."""
        self.process = engines.start_vllm(
            self.role, self.port, self.core, self.side_channel_port, self.log_path
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


@pytest.fixture(scope="session")
def engine_pair(tiny_model: Path, e2e_logs: Path) -> Iterator[EnginePair]:
    """Start the session's prefill and decode engines together and stop them at the end."""
    pair = EnginePair(
        prefill=EngineSlot(
            "prefill", 0, procs.free_port(), procs.free_port(), e2e_logs / "vllm-prefill.log"
        ),
        decode=EngineSlot(
            "decode", 1, procs.free_port(), procs.free_port(), e2e_logs / "vllm-decode.log"
        ),
    )
    try:
        pair.prefill.start()
        pair.decode.start()
        pair.prefill.wait_ready()
        pair.decode.wait_ready()
        yield pair
    finally:
        pair.prefill.stop()
        pair.decode.stop()


@pytest.fixture
def healthy_pair(engine_pair: EnginePair) -> EnginePair:
    """The session pair, restarted first if an earlier test left an engine down."""
    engine_pair.prefill.ensure_running()
    engine_pair.decode.ensure_running()
    return engine_pair


@pytest.fixture(scope="session")
def router_factory(e2e_logs: Path) -> Iterator[RouterFactory]:
    """Starts routers on free ports; every router is stopped at the end of the session."""
    factory = RouterFactory(e2e_logs)
    yield factory
    factory.stop_all()


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


@pytest.fixture(scope="session")
def sim_binary() -> Path:
    """llm-d-inference-sim, built on first use."""
    return simulators.ensure_sim()
