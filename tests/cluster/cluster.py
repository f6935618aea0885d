"""The cluster the tests talk to: scripts/k8s/cluster.sh's control plane, the pod runner, and
the commands a user types (kubectl, helm, kubectl port-forward), run as real processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tests.chart.helm import CHART, ROOT, ROUTER_IMAGE, ROUTER_REPOSITORY, TOOLS, helm_env

CLUSTER_SH = ROOT / "scripts" / "k8s" / "cluster.sh"
# A namespace label the pod runner reads: its engine pods run the `vllm serve` double.
DOUBLE_ENGINES = {"podrunner.pdstack.io/engines": "double"}
T = TypeVar("T")


class ClusterError(RuntimeError):
    """A command against the cluster failed; the message carries its output."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.5
) -> T:
    """Poll `probe` until it returns something truthy; ClusterError naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def is_ready(pod: dict[str, Any]) -> bool:
    """The pod's Ready condition is True (what `kubectl get pods` shows as 1/1)."""
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def component(pod: dict[str, Any]) -> str:
    """prefill, decode, both, router or cache-server, from the chart's labels."""
    labels = pod["metadata"].get("labels") or {}
    return str(labels.get("pdstack.io/role") or labels.get("pdstack.io/component") or "?")


@dataclass
class Cluster:
    """A running control plane: its state folder, kubeconfig and binaries."""

    state: Path
    kubeconfig: Path
    bin: Path
    pod_net: str

    # --- lifecycle ----------------------------------------------------------------------------
    @classmethod
    def up(cls, state: Path, nodes: int = 2) -> Cluster:
        env = {**os.environ, "PDSTACK_K8S_NODES": str(nodes)}
        done = subprocess.run(
            ["bash", str(CLUSTER_SH), "up", str(state)],
            env=env,
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
        )
        if done.returncode != 0:
            raise ClusterError(f"cluster.sh up failed:\n{done.stdout}\n{done.stderr}")
        values = dict(re.findall(r"^(?:export )?(\w+)=(.*)$", (state / "env").read_text(), re.M))
        return cls(
            state, Path(values["KUBECONFIG"]), Path(values["PDSTACK_K8S_BIN"]), values["POD_NET"]
        )

    def down(self) -> str:
        done = subprocess.run(
            ["bash", str(CLUSTER_SH), "down", str(self.state)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        return done.stderr

    # --- commands a user types ----------------------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        """KUBECONFIG and PATH (kubectl, helm) as `eval "$(cluster.sh env)"` sets them, and
        ROUTER_IMAGE as tutorials/00-prerequisites has it for a locally built image."""
        return {
            **helm_env(),
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.bin}:{TOOLS / 'bin'}:{os.environ.get('PATH', '')}",
            "ROUTER_IMAGE": ROUTER_REPOSITORY,
        }

    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            list(argv),
            input=input,
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise ClusterError(
                f"{' '.join(argv)} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
            )
        return done

    def kubectl(self, *args: str, **kw: Any) -> str:
        return self.run(["kubectl", *args], **kw).stdout

    def helm(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.run(["helm", *args], **kw)

    def apply(self, manifest: str, namespace: str | None = None) -> None:
        ns = ["-n", namespace] if namespace else []
        self.kubectl("apply", *ns, "-f", "-", input=manifest)

    def get(self, kind: str, namespace: str | None = None, *args: str) -> list[dict[str, Any]]:
        ns = ["-n", namespace] if namespace else []
        return list(json.loads(self.kubectl("get", kind, *ns, *args, "-o", "json"))["items"])

    def create_namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        meta = {"name": name, "labels": labels or {}}
        self.apply(json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": meta}))
        # The controller-manager creates each namespace's default ServiceAccount.
        has_sa = ["kubectl", "get", "serviceaccount", "default", "-n", name]
        wait_until(
            f"ServiceAccount default in {name}",
            lambda: self.run(has_sa, check=False).returncode == 0,
            30,
        )

    def delete_namespace(self, name: str) -> None:
        """Delete it and everything in it (without waiting for the pods to finish)."""
        self.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")

    def release(
        self,
        verb: str,
        namespace: str,
        values: Path,
        *args: str,
        chart: Path = CHART,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """`helm install|upgrade vllm CHART -n NAMESPACE -f VALUES --set routerSpec.repository=...
        ARGS --wait`."""
        return self.helm(
            verb,
            "vllm",
            str(chart),
            "-n",
            namespace,
            "-f",
            str(values),
            *ROUTER_IMAGE,
            *args,
            "--wait",
            "--timeout",
            "6m",
            timeout=420,
            check=check,
        )

    def pods(self, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        extra = ["-l", selector] if selector else []
        return self.get("pods", namespace, *extra)

    def add_nodes(self, count: int) -> None:
        for _ in range(count):
            name = f"kwok-node-{len(self.get('nodes'))}"
            self.run(["bash", str(CLUSTER_SH), "add-node", name, str(self.state)])

    @contextlib.contextmanager
    def port_forward(self, namespace: str, target: str, remote: int) -> Iterator[int]:
        """`kubectl port-forward TARGET LOCAL:REMOTE`, through the API server and kwok."""
        local = free_port()
        proc = subprocess.Popen(
            ["kubectl", "port-forward", "-n", namespace, target, f"{local}:{remote}"],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if "Forwarding from" not in line:
                proc.kill()
                raise ClusterError(f"kubectl port-forward {target}: {line}{proc.stdout.read()}")
            yield local
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


class PodRunner:
    """tests.cluster.podrunner as a process: runs the cluster's pods until stopped."""

    def __init__(self, cluster: Cluster) -> None:
        self.log_path = cluster.state / "podrunner.log"
        self.state = cluster.state / "runner"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.cluster.podrunner",
                    "--kubeconfig",
                    str(cluster.kubeconfig),
                    "--state",
                    str(self.state),
                ],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if b"PODRUNNER_READY" not in line:
            self.stop()
            raise ClusterError(f"pod runner did not start:\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def container_log(self, pod: dict[str, Any], container: str) -> str:
        """What the container's process printed (kubectl logs has no source under kwok)."""
        meta = pod["metadata"]
        folder = self.state / "pods" / meta["namespace"] / f"{meta['name']}-{meta['uid'][:8]}"
        path = folder / f"{container}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
