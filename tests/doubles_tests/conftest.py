"""Fixtures for the fake engine's own tests (real processes, real loopback sockets)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.doubles.engine_proc import FakeEngine
from tests.doubles.fixtures import (  # noqa: F401  (pytest fixtures)
    fake_engine_factory,
    lmcache_proxy_sink,
    make_fake_engine_fixture,
)

module_engines = make_fake_engine_fixture("module")


@pytest.fixture(scope="module")
def shared_engine(module_engines) -> FakeEngine:  # type: ignore[no-untyped-def]
    """One engine per test module; tests reset it before use."""
    return module_engines(models=["tiny", "other"], max_model_len=512)


@pytest.fixture
def engine(shared_engine: FakeEngine) -> Iterator[FakeEngine]:
    shared_engine.reset()
    yield shared_engine
