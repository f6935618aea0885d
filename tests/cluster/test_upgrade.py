"""Scenario 3: `helm upgrade` that changes only the router, or only the chart version, leaves
every engine pod running (same UID): on a GPU cluster engines reload weights for minutes.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.chart.helm import CHART
from tests.cluster.cluster import DOUBLE_ENGINES, Cluster, PodRunner
from tests.cluster.observed import note

NS = "upgrade"
VALUES = Path(__file__).parent / "values" / "xpyd-doubles.yaml"


def uids(cluster: Cluster, component: str) -> dict[str, str]:
    """The component's pods that are not on their way out (a replaced router drains a while)."""
    pods = cluster.pods(NS, f"app.kubernetes.io/instance=vllm,pdstack.io/component={component}")
    return {
        p["metadata"]["uid"]: p["metadata"]["name"]
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
    }


@pytest.fixture(scope="module")
def installed(cluster: Cluster, runner: PodRunner) -> Iterator[None]:
    cluster.create_namespace(NS, DOUBLE_ENGINES)
    cluster.release("install", NS, VALUES)
    yield
    cluster.delete_namespace(NS)


def upgrade(cluster: Cluster, chart: Path, *sets: str) -> None:
    cluster.release("upgrade", NS, VALUES, *(a for s in sets for a in ("--set", s)), chart=chart)


def test_a_router_only_upgrade_replaces_the_router_and_no_engine(
    cluster: Cluster, installed: None
) -> None:
    engines, routers = uids(cluster, "engine"), uids(cluster, "router")
    upgrade(cluster, CHART, "routerSpec.logLevel=debug")
    after = uids(cluster, "router")
    note(
        "3-upgrade",
        f"router-only upgrade: router {sorted(routers.values())} -> "
        f"{sorted(after.values())}; engines kept: {sorted(uids(cluster, 'engine').values())}",
    )
    assert uids(cluster, "engine") == engines
    assert after and not set(after) & set(routers), "the router pod was not replaced"


def test_a_chart_version_bump_leaves_every_engine_pod_running(
    cluster: Cluster, installed: None, tmp_path: Path
) -> None:
    bumped = tmp_path / "pdstack"
    shutil.copytree(CHART, bumped)
    meta = yaml.safe_load((bumped / "Chart.yaml").read_text())
    meta["version"] = meta["version"] + "-next"
    (bumped / "Chart.yaml").write_text(yaml.safe_dump(meta))
    engines = uids(cluster, "engine")
    upgrade(cluster, bumped, "routerSpec.logLevel=debug")
    history = cluster.helm("history", "vllm", "-n", NS).stdout
    note(
        "3-upgrade",
        f"chart {meta['version']}: engines {sorted(uids(cluster, 'engine').values())}\n{history}",
    )
    assert meta["version"] in history
    assert uids(cluster, "engine") == engines
