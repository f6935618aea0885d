"""Scenario 4: every values file in values/ installs with `helm install --wait` on a real API
server, with engine pods admitted under the `baseline` Pod Security level and the router under
`restricted`; `servingEngineSpec.podSecurityLevel: restricted` makes the engines admissible under
`restricted` too.

What the cluster provides (and a real one must): nodes with the GPUs the files ask for (kwok
nodes of 8 `nvidia.com/gpu` each), and storage for the PVCs of `pvcStorage` (here static
hostPath PersistentVolumes; on a real cluster a default StorageClass with a provisioner). The
engine pods run the vLLM CLI double: vLLM's own flags are checked, no GPU model is loaded.
"""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.chart.helm import CHART, ROOT, ROUTER_IMAGE
from tests.cluster.cluster import (
    DOUBLE_ENGINES,
    Cluster,
    ClusterError,
    PodRunner,
    component,
    is_ready,
    wait_until,
)
from tests.cluster.observed import note

VALUES_FILES = sorted((ROOT / "values").glob("*.yaml"))
# Values files whose engines need more than `baseline`, with what `baseline` says (asserted
# below, so the list cannot go stale): production-stack's example adds the SYS_PTRACE
# capability and the RDMA example IPC_LOCK, which only `privileged` allows.
NEEDS_PRIVILEGED = {
    "values-production-stack-pd.yaml": "non-default capabilities",
    "values-pd-rdma.yaml": "non-default capabilities",
}
# Extended resources the values files request besides GPUs, which a device plugin advertises on
# a real cluster (values-pd-rdma.yaml: the RDMA shared-device plugin's NIC share).
EXTENDED = {"rdma/rdma_shared_device_a": "64"}
ENFORCE = "pod-security.kubernetes.io/enforce"


def namespace_for(values: Path) -> str:
    return "vf-" + re.sub(r"[^a-z0-9-]", "-", values.stem.removeprefix("values-"))


def storage(cluster: Cluster, count: int) -> None:
    """Static PersistentVolumes any claim without a storage class can bind (the cluster's answer
    to pvcStorage; a real cluster has a default StorageClass and a provisioner instead)."""
    docs = []
    for i in range(count):
        path = cluster.state / "volumes" / f"pv-{i}"
        path.mkdir(parents=True, exist_ok=True)
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": f"static-pv-{i}"},
                "spec": {
                    "capacity": {"storage": "500Gi"},
                    "accessModes": ["ReadWriteOnce", "ReadWriteMany"],
                    "hostPath": {"path": str(path)},
                    "persistentVolumeReclaimPolicy": "Delete",
                },
            }
        )
    cluster.apply("\n---\n".join(json.dumps(d) for d in docs))


def install(cluster: Cluster, values: Path) -> tuple[Path, float, str]:
    ns = namespace_for(values)
    level = "privileged" if values.name in NEEDS_PRIVILEGED else "baseline"
    cluster.create_namespace(ns, {**DOUBLE_ENGINES, ENFORCE: level})
    started = time.monotonic()
    done = cluster.release("install", ns, values, check=False)
    return values, time.monotonic() - started, done.stdout + done.stderr if done.returncode else ""


@pytest.fixture(scope="module")
def installed(cluster: Cluster, runner: PodRunner) -> dict[Path, float]:
    """Every values file installed at once, each in its own baseline namespace."""
    cluster.add_nodes(4)
    storage(cluster, 6)
    for node in cluster.get("nodes"):
        status = {"capacity": EXTENDED, "allocatable": EXTENDED}
        patch = ["patch", "node", node["metadata"]["name"], "--subresource=status"]
        cluster.kubectl(*patch, "-p", json.dumps({"status": status}))
    with ThreadPoolExecutor(len(VALUES_FILES)) as pool:
        results = list(pool.map(lambda v: install(cluster, v), VALUES_FILES))
    failed = {v.name: err for v, _, err in results if err}
    if failed:
        pytest.fail(f"helm install --wait failed: {failed}\n{runner.log_tail()}")
    return {v: took for v, took, _ in results}


def refused_under(cluster: Cluster, ns: str, level: str) -> tuple[int, str]:
    """How many running pods a server-side dry run of enforcing `level` on the namespace says
    it would refuse, and its warnings (one pod named per kind of violation, "and N other pods")."""
    label = ["label", "--dry-run=server", "--overwrite", "namespace", ns, f"{ENFORCE}={level}"]
    warnings = cluster.run(["kubectl", *label]).stderr
    groups = re.findall(r"Warning: \S+?(?: \(and (\d+) other pods?\))?: ", warnings)
    return sum(1 + int(more or 0) for more in groups), warnings


@pytest.mark.parametrize("values", VALUES_FILES, ids=lambda p: p.name)
def test_values_file_installs_with_wait(
    cluster: Cluster, installed: dict[Path, float], values: Path
) -> None:
    """Installed under `baseline` (`privileged` where listed above): every pod Ready; under
    `restricted` the engine pods would be refused, never the router."""
    ns = namespace_for(values)
    pods = cluster.pods(ns)
    ready = [p for p in pods if is_ready(p)]
    level = "privileged" if values.name in NEEDS_PRIVILEGED else "baseline"
    summary = ", ".join(sorted(component(p) for p in pods))
    note(
        "4-values-files",
        f"{values.name} ({level}): deployed with --wait in "
        f"{installed[values]:.0f}s, {len(ready)}/{len(pods)} pods Ready ({summary})",
    )
    assert pods and len(ready) == len(pods)
    routers = [p for p in pods if component(p) == "router"]
    engines = [p for p in pods if component(p) in ("prefill", "decode", "both")]
    refused, warnings = refused_under(cluster, ns, "restricted")
    # Every pod but the router: the engines (and an LMCache cache server, which runs as root).
    assert routers and refused == len(pods) - len(routers), warnings
    if values.name in NEEDS_PRIVILEGED:
        refused, warnings = refused_under(cluster, ns, "baseline")
        note("4-values-files", f"{values.name} under baseline: {warnings.strip()}")
        assert refused == len(engines) and NEEDS_PRIVILEGED[values.name] in warnings, warnings


def test_restricted_namespace_refuses_baseline_engines_but_admits_the_switch(
    cluster: Cluster, runner: PodRunner
) -> None:
    values = ROOT / "values" / "values-pd.yaml"
    cluster.create_namespace("restricted-default", {**DOUBLE_ENGINES, ENFORCE: "restricted"})
    cluster.create_namespace("restricted-switch", {**DOUBLE_ENGINES, ENFORCE: "restricted"})
    try:
        # As shipped: helm is content ("deployed") while the ReplicaSets cannot create engines.
        done = cluster.helm(
            "install", "vllm", str(CHART), "-n", "restricted-default", "-f", str(values),
            *ROUTER_IMAGE,
        )  # fmt: skip
        assert "STATUS: deployed" in done.stdout
        refusal = wait_until(
            "the engine ReplicaSets' FailedCreate events",
            lambda: [
                e["message"]
                for e in cluster.get("events", "restricted-default")
                if e["reason"] == "FailedCreate" and "violates PodSecurity" in e["message"]
            ],
            60,
        )
        note("4-values-files", f"values-pd.yaml under restricted, as shipped: {refusal[0]}")
        assert 'violates PodSecurity "restricted:latest"' in refusal[0]
        assert [
            p for p in cluster.pods("restricted-default") if "engine" in p["metadata"]["name"]
        ] == []

        started = time.monotonic()
        cluster.release(
            "install",
            "restricted-switch",
            values,
            "--set",
            "servingEngineSpec.podSecurityLevel=restricted",
        )
        pods = cluster.pods("restricted-switch")
        note(
            "4-values-files",
            f"values-pd.yaml + podSecurityLevel=restricted under restricted: "
            f"{len(pods)} pods Ready with --wait in {time.monotonic() - started:.0f}s",
        )
        assert len(pods) == 3
    finally:
        for ns in ("restricted-default", "restricted-switch"):
            cluster.delete_namespace(ns)


def test_values_files_uninstall(cluster: Cluster, installed: dict[Path, float]) -> None:
    """Leave capacity to the later modules; scenario 5 checks what uninstall leaves behind."""
    for values in VALUES_FILES:
        try:
            cluster.helm("uninstall", "vllm", "-n", namespace_for(values), "--wait", timeout=200)
        except ClusterError as exc:
            pytest.fail(str(exc))
        cluster.delete_namespace(namespace_for(values))
