"""Fixtures of the fault-injection suite: engine fixtures and the matrix recorder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.doubles.fixtures import fake_engine_factory, make_fake_engine_fixture  # noqa: F401
from tests.faults.report import MatrixRecorder

# Engines shared by a whole test module (reset between scenarios with `.reset()`).
fake_engine_factory_module = make_fake_engine_fixture("module")


@pytest.fixture(scope="session")
def matrix() -> Iterator[MatrixRecorder]:
    """Rows of the fault matrix; written to results/faults/matrix.json at the end."""
    recorder = MatrixRecorder()
    yield recorder
    recorder.write()
