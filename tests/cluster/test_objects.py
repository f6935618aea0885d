"""Scenario 5: the NetworkPolicy, ServiceMonitor and autoscaling objects are accepted by a real
API server (their CRDs installed first, as a cluster with the Prometheus Operator and KEDA has
them), the chart's capability check sees the ServiceMonitor API, and `helm uninstall` leaves
nothing behind in the namespace.
"""

from __future__ import annotations

from pathlib import Path

from tests.cluster.cluster import DOUBLE_ENGINES, Cluster, PodRunner, wait_until
from tests.cluster.observed import note

NS = "objects"
HERE = Path(__file__).parent
EXPECTED = {
    "networkpolicies": 2,
    "servicemonitors.monitoring.coreos.com": 2,
    "horizontalpodautoscalers": 2,
    "scaledobjects.keda.sh": 1,
    "poddisruptionbudgets": 3,
    "ingresses": 1,
}


def namespace_contents(cluster: Cluster) -> set[str]:
    """Every object of every listable namespaced kind in NS (events aside), as kind/name."""
    kinds = cluster.kubectl("api-resources", "--verbs=list", "--namespaced", "-o", "name").split()
    kinds = [k for k in kinds if k not in ("events", "events.events.k8s.io")]
    listed = cluster.kubectl("get", ",".join(kinds), "-n", NS, "-o", "name", "--ignore-not-found")
    return set(listed.split())


def test_optional_objects_are_accepted_and_uninstall_leaves_nothing(
    cluster: Cluster, runner: PodRunner
) -> None:
    cluster.kubectl("apply", "-f", str(HERE / "crds"))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "crd/servicemonitors.monitoring.coreos.com",
        "crd/scaledobjects.keda.sh",
        "--timeout=60s",
    )
    cluster.create_namespace(NS, DOUBLE_ENGINES)
    empty = namespace_contents(cluster)
    try:
        cluster.release("install", NS, HERE / "values" / "objects.yaml")
        counts = {kind: len(cluster.get(kind, NS)) for kind in EXPECTED}
        note("5-objects", f"accepted by the API server: {counts}")
        assert counts == EXPECTED
        installed = namespace_contents(cluster) - empty
        note("5-objects", f"{len(installed)} objects in the namespace after install")

        cluster.helm("uninstall", "vllm", "-n", NS, "--wait", "--timeout", "2m", timeout=200)
        # Pods finish terminating and owned objects (ReplicaSets, kwok's per-pod objects) are
        # garbage-collected after helm returns.
        try:
            wait_until(
                "the namespace back to its empty state",
                lambda: namespace_contents(cluster) == empty,
                90,
            )
        finally:
            left = namespace_contents(cluster) - empty
            note(
                "5-objects",
                f"after helm uninstall: {sorted(left) or 'nothing'} left beside {sorted(empty)}",
            )
        assert not left
    finally:
        cluster.delete_namespace(NS)
