"""Scenario 1: the production-stack PD walk-through (seed 004), run as a user runs it.

`helm install --wait` with real CPU vLLM engines serving the tiny model, `kubectl get pods`,
`kubectl port-forward svc/vllm-router-service`, the `openai` client (chat and completions,
stream and not), then `run_pd.sh MODEL http://localhost:PORT/v1 stack` with the default workload
shape. The decoder must load every prompt token's KV from the prefiller (NIXL), which its
`vllm:external_prefix_cache_hits_total` counts.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.chart.helm import CHART, ROOT, ROUTER_IMAGE
from tests.cluster.cluster import (
    Cluster,
    ClusterError,
    PodRunner,
    component,
    wait_until,
)
from tests.cluster.observed import note
from tests.harness.router_proc import metric_value

sys.path.insert(0, str(ROOT / "scripts" / "engines"))
import engines

VALUES = Path(__file__).parent / "values" / "walkthrough-cpu.yaml"
RUN_PD = ROOT / "benchmarks" / "multi-round-qa" / "run_pd.sh"
EXTERNAL_HITS = "vllm:external_prefix_cache_hits_total"
LOCAL_HITS = "vllm:prefix_cache_hits_total"
NS = "default"  # the walk-through's commands name no namespace


@dataclass
class Stack:
    """The installed release: its pods by role and how long `helm install --wait` took."""

    pods: dict[str, dict[str, Any]]
    install_s: float

    def decode_hits(self) -> float:
        return self.decode_metric(EXTERNAL_HITS)

    def decode_metric(self, name: str) -> float:
        ip = self.pods["decode"]["status"]["podIP"]
        with urllib.request.urlopen(f"http://{ip}:8000/metrics", timeout=10) as resp:
            return metric_value(resp.read().decode(), name)

    def decode_prompt_hits(self) -> float:
        """Prompt tokens the decoder did not compute: pulled from the prefiller (external) or
        found in its own prefix cache (a conversation's earlier rounds, a shared system prompt),
        which it does not pull again."""
        return self.decode_metric(EXTERNAL_HITS) + self.decode_metric(LOCAL_HITS)


def model_volumes(cluster: Cluster) -> str:
    """Two PVs of class pdstack-models holding the model as tiny/ (what the values file asks)."""
    folder = cluster.state / "volumes" / "models"
    if not (folder / "tiny").exists():
        shutil.copytree(engines.ensure_tiny_model(), folder / "tiny")
    docs = []
    for i in range(2):
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": f"pdstack-models-{i}"},
                "spec": {
                    "storageClassName": "pdstack-models",
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "hostPath": {"path": str(folder)},
                },
            }
        )
    return "\n---\n".join(json.dumps(d) for d in docs)


@pytest.fixture(scope="module")
def stack(cluster: Cluster, runner: PodRunner) -> Iterator[Stack]:
    engines.ensure_vllm()
    cluster.apply(model_volumes(cluster))
    started = time.monotonic()
    try:
        cluster.helm(
            "install",
            "vllm",
            str(CHART),
            "-f",
            str(VALUES),
            *ROUTER_IMAGE,
            "--wait",
            "--timeout",
            "15m",
            timeout=1000,
        )
    except ClusterError:
        print(runner.log_tail())
        raise
    install_s = time.monotonic() - started
    pods = {component(p): p for p in cluster.pods(NS, "app.kubernetes.io/instance=vllm")}
    note("1-walkthrough", f"helm install --wait: deployed in {install_s:.0f}s")
    try:
        yield Stack(pods, install_s)
    finally:
        cluster.helm("uninstall", "vllm", "--wait", "--timeout", "2m", check=False)
        cluster.kubectl("delete", "pv", "pdstack-models-0", "pdstack-models-1", check=False)


def test_kubectl_get_pods_shows_prefill_decode_and_router_running(
    cluster: Cluster, stack: Stack
) -> None:
    table = cluster.kubectl("get", "pods", "-o", "wide")
    note("1-walkthrough", "kubectl get pods -o wide:\n" + table)
    rows = [line.split() for line in table.splitlines()[1:]]
    assert len(rows) == 3, table
    assert {r[1] for r in rows} == {"1/1"} and {r[2] for r in rows} == {"Running"}, table
    names = " ".join(r[0] for r in rows)
    assert "vllm-tiny-prefill-" in names and "vllm-tiny-decode-" in names
    assert "vllm-router-" in names
    assert set(stack.pods) == {"prefill", "decode", "router"}


def test_openai_client_through_port_forward_with_kv_from_the_prefiller(
    cluster: Cluster, stack: Stack
) -> None:
    with cluster.port_forward(NS, "svc/vllm-router-service", 80) as port:
        client = openai.OpenAI(
            base_url=f"http://localhost:{port}/v1", api_key="none", max_retries=0, timeout=120
        )
        assert [m.id for m in client.models.list().data] == ["tiny"]
        before = stack.decode_hits()
        chat = client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "walk-through chat, not streamed"}],
            max_tokens=16,
        )
        assert chat.choices[0].message.content and chat.usage is not None
        prompt_tokens = chat.usage.prompt_tokens
        hits = wait_until(
            "the decoder's external prefix-cache hits",
            lambda: (stack.decode_hits() - before) or None,
            30,
        )
        note(
            "1-walkthrough",
            f"chat: {prompt_tokens} prompt tokens, decoder {EXTERNAL_HITS} +{hits:.0f}",
        )
        assert hits == prompt_tokens, "the decoder recomputed instead of loading the prefiller's KV"

        chunks = list(
            client.chat.completions.create(
                model="tiny",
                messages=[{"role": "user", "content": "walk-through chat, streamed"}],
                max_tokens=24,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0

        done = client.completions.create(
            model="tiny", prompt="walk-through completion", max_tokens=16
        )
        assert done.choices[0].text and done.usage is not None
        streamed = list(
            client.completions.create(
                model="tiny",
                prompt="walk-through completion, streamed",
                max_tokens=16,
                stream=True,
            )
        )
        assert "".join(c.choices[0].text for c in streamed if c.choices)


def test_run_pd_with_the_default_workload_shape(
    cluster: Cluster, runner: PodRunner, stack: Stack, tmp_path: Path
) -> None:
    """`run_pd.sh MODEL http://localhost:PORT/v1 stack`: the default conversations (1,000-word
    system prompt, 200 of history, 5 rounds of 30-word questions and 100-token answers, 10
    users); two short QPS levels instead of three minute-long ones, no warm-up, so every request
    sent is in the results and the decoder's counter can be checked against them."""
    with cluster.port_forward(NS, "svc/vllm-router-service", 80) as port:
        before = stack.decode_prompt_hits()
        external_before = stack.decode_hits()
        done = subprocess.run(
            [
                "bash",
                str(RUN_PD),
                "tiny",
                f"http://localhost:{port}/v1",
                "stack",
                "--qps",
                "0.5,1",
                "--duration",
                "30",
                "--warmup-requests",
                "0",
            ],
            env={"RESULTS_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    note("1-walkthrough", "run_pd.sh table:\n" + done.stdout)
    with (tmp_path / "stack" / "requests.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    failed = [
        {k: r[k] for k in ("qps", "user_id", "round", "reason", "e2e_ms")}
        for r in rows
        if r["ok"] != "1"
    ]
    assert done.returncode == 0 and not failed, (
        f"{failed}\n{done.stderr[-3000:]}\n{runner.log_tail()}"
    )
    prompt_tokens = sum(int(r["prompt_tokens"]) for r in rows)
    longest = max(int(r["prompt_tokens"]) for r in rows)
    # The decoder's /metrics catch up within a scrape or two of the last request.
    try:
        wait_until(
            "decoder hits (external + its own prefix cache) == prompt tokens",
            lambda: stack.decode_prompt_hits() - before == prompt_tokens,
            30,
        )
    finally:
        hits = stack.decode_prompt_hits() - before
        external = stack.decode_hits() - external_before
        note(
            "1-walkthrough",
            f"run_pd.sh: {len(rows)} requests, {prompt_tokens} prompt tokens "
            f"(longest {longest}); decoder {EXTERNAL_HITS} +{external:.0f}, "
            f"{LOCAL_HITS} +{hits - external:.0f}",
        )
