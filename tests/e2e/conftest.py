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
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "engines"))

import engines  # noqa: E402
import procs  # noqa: E402
import simulators  # noqa: E402

from tests.e2e.harness import EnginePair, EngineSlot, RouterFactory  # noqa: E402
from tests.harness.otel_collector import Collector, ensure_collector  # noqa: E402

SKIP = os.environ.get("PDSTACK_SKIP_E2E") == "1"
# Per-test limit for e2e tests, fixture set-up included: the first one may install the vLLM
# environment and build the simulator (minutes on a cold cache).
E2E_TIMEOUT_S = 1800


@pytest.hookimpl(tryfirst=True)  # before `-m e2e` / `-m "not e2e"` selects on the marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in tests/e2e is an e2e test (with a long timeout), skipped when
    PDSTACK_SKIP_E2E=1."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.timeout(E2E_TIMEOUT_S))
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


@pytest.fixture(scope="session")
def otel_collector(e2e_logs: Path) -> Iterator[Collector]:
    """An OpenTelemetry Collector the session's engines (and traced routers) export spans to."""
    with Collector(ensure_collector(), e2e_logs / "otelcol").start() as collector:
        yield collector


@pytest.fixture(scope="session")
def engine_pair(
    tiny_model: Path, e2e_logs: Path, otel_collector: Collector
) -> Iterator[EnginePair]:
    """Start the session's prefill and decode engines together and stop them at the end.
    Both export their request spans to the session's collector (tests/e2e/test_tracing.py)."""
    otlp = otel_collector.grpc_endpoint
    pair = EnginePair(
        prefill=EngineSlot(
            "prefill",
            0,
            procs.free_port(),
            procs.free_port(),
            e2e_logs / "vllm-prefill.log",
            otlp_endpoint=otlp,
        ),
        decode=EngineSlot(
            "decode",
            1,
            procs.free_port(),
            procs.free_port(),
            e2e_logs / "vllm-decode.log",
            otlp_endpoint=otlp,
        ),
    )
    for slot in (pair.prefill, pair.decode):  # KV-cache events for the router's index
        slot.kv_events_port, slot.kv_replay_port = procs.free_port(), procs.free_port()
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


@pytest.fixture(scope="session")
def sim_binary() -> Path:
    """llm-d-inference-sim, built on first use."""
    return simulators.ensure_sim()
