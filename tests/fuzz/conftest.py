"""Fixtures of the fuzz tests: a PD router over two fake engines, and the case counter."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.doubles.fixtures import make_fake_engine_fixture
from tests.fuzz.counts import CaseCounts
from tests.harness.router_proc import RouterProcess, static_args

fake_engine_factory_module = make_fake_engine_fixture("module")


@pytest.fixture(scope="session")
def case_counts() -> Iterator[CaseCounts]:
    counts = CaseCounts()
    yield counts
    counts.write()


class FuzzTarget:
    """A disagg_prefill router (1P1D) and its engines; `forwarded()` counts engine requests."""

    def __init__(self, factory: Any) -> None:
        self.engines = [factory(role="prefill"), factory(role="decode", max_output_tokens=8)]
        args = [
            *static_args(self.engines, roles=["prefill", "decode"]),
            "--routing-logic",
            "disagg_prefill",
            "--max-body-bytes",
            "65536",
            "--first-byte-timeout",
            "5",
            "--engine-scrape-interval",
            "5",
        ]
        self.router = RouterProcess(args).start()

    def forwarded(self) -> int:
        return sum(sum(e.stats()["by_path"].values()) for e in self.engines)


@pytest.fixture(scope="module")
def target(fake_engine_factory_module: Any) -> Iterator[FuzzTarget]:
    t = FuzzTarget(fake_engine_factory_module)
    try:
        yield t
    finally:
        t.router.stop()
