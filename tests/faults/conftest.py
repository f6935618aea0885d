"""Fixtures of the fault-injection suite: engine fixtures and the matrix recorder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.doubles.fixtures import fake_engine_factory, make_fake_engine_fixture  # noqa: F401
from tests.faults.kube import KubeApiThread
from tests.faults.report import MatrixRecorder

# Engines shared by a whole test module (reset between scenarios with `.reset()`).
fake_engine_factory_module = make_fake_engine_fixture("module")


@pytest.fixture(scope="session")
def matrix() -> Iterator[MatrixRecorder]:
    """Rows of the fault matrix; written to results/faults/matrix.json at the end."""
    recorder = MatrixRecorder()
    yield recorder
    recorder.write()


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[tuple[KubeApiThread, Path]]:
    """The fake Kubernetes API (a test double) and a kubeconfig pointing at it."""
    api = KubeApiThread()
    try:
        yield api, api.kubeconfig(tmp_path / "kubeconfig")
    finally:
        api.close()
