"""The tutorials' `run (against a cluster)` blocks, pasted into a shell as a reader would, against
the real API server: kubectl and helm as written, the cluster's engines being the `vllm serve`
double (the tutorials' values files ask for GPUs). Each tutorial gets its own namespace, set as
the kubeconfig's current one, so its namespace-less commands work as in a fresh cluster.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.chart.helm import ROOT
from tests.cluster.cluster import DOUBLE_ENGINES, Cluster, PodRunner, free_port
from tests.cluster.observed import note
from tests.docs.markdown import blocks, tutorial_files

# The tutorials' fixed local port for `kubectl port-forward`; each run uses a free one instead.
TUTORIAL_PORT = "30080"
CLUSTER_BLOCKS = {
    path: [b for b in blocks(path) if b.kind == "run" and b.stack == "cluster"]
    for path in tutorial_files()
}


@pytest.mark.parametrize(
    "path", [p for p, found in CLUSTER_BLOCKS.items() if found], ids=lambda p: p.name
)
def test_tutorial_blocks_run_against_the_cluster(
    cluster: Cluster, runner: PodRunner, path: Path, tmp_path: Path
) -> None:
    ns = "tut-" + path.name[:2]
    cluster.create_namespace(ns, DOUBLE_ENGINES)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        cluster.kubeconfig.read_text().replace("namespace: default", f"namespace: {ns}")
    )
    env = {**cluster.env, "KUBECONFIG": str(kubeconfig), "HF_TOKEN": "hf_tutorial_test_token"}
    port = str(free_port())
    sessions: list[int] = []
    try:
        for number, block in enumerate(CLUSTER_BLOCKS[path]):
            log = tmp_path / f"block-{number}.log"
            with log.open("w") as out:
                # Its own session, so what it leaves running (a port-forward `&`) is stopped
                # after the tutorial's last block; output to a file, which such a child keeps open.
                proc = subprocess.Popen(
                    ["bash", "-e", "-c", block.text.replace(TUTORIAL_PORT, port)],
                    cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
                sessions.append(proc.pid)
                code = proc.wait(timeout=900)
            output = log.read_text()
            note("tutorials", f"{block.where}: exit {code}\n{output.strip()}")
            assert code == 0, (
                f"{block.where} exited {code}:\n{block.text}\n{output}\n{runner.log_tail()}"
            )
            assert output.strip(), f"{block.where} printed nothing"
    finally:
        for pgid in sessions:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
        cluster.delete_namespace(ns)
