from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.doubles.fixtures import fake_engine_factory  # noqa: F401  (pytest fixture)
from tests.harness.otel_collector import Collector, ensure_collector


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    """A real OpenTelemetry Collector (OTLP gRPC + HTTP in, JSON file out) for one module."""
    with Collector(ensure_collector(), tmp_path_factory.mktemp("otelcol")).start() as col:
        yield col
