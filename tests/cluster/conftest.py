"""Fixtures for the cluster suite: one control plane and one pod runner for the whole package.

The control plane is built by scripts/k8s/build.sh (cached outside the clone; a cold build takes
5-10 min, which `make test` overlaps with the other installs) and started on free ports in a
temporary folder. Everything is stopped after the package's last test, before the real-engine
e2e tests start their own engines.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chart.helm import ROOT
from tests.cluster.cluster import Cluster, PodRunner
from tests.cluster.observed import RESULTS

# Per-test limit, fixture set-up included (a cold control-plane build happens in the first).
CLUSTER_TIMEOUT_S = 3600


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in tests/cluster carries the `cluster` marker and a long timeout."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.cluster)
            item.add_marker(pytest.mark.timeout(CLUSTER_TIMEOUT_S))


@pytest.fixture(scope="package")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A running control plane with two kwok nodes (built first if not cached)."""
    tools = subprocess.run([str(ROOT / "scripts" / "install-tools.sh")], capture_output=True,
                           text=True, check=False, timeout=1800)  # fmt: skip
    if tools.returncode != 0:
        pytest.fail(f"install-tools.sh failed:\n{tools.stdout}\n{tools.stderr}")
    shutil.rmtree(RESULTS, ignore_errors=True)  # this run's observations only
    state = tmp_path_factory.mktemp("cluster")
    started = Cluster.up(state)
    try:
        yield started
    finally:
        started.down()


@pytest.fixture(scope="package")
def runner(cluster: Cluster) -> Iterator[PodRunner]:
    """The pod runner: the kubelet of the cluster's nodes."""
    pods = PodRunner(cluster)
    try:
        yield pods
    finally:
        pods.stop()
        if os.environ.get("PDSTACK_CLUSTER_LOGS"):
            print(pods.log_tail(200))
