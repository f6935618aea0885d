"""Run the tutorials' shell blocks that can run on this machine, as a reader would paste them.

- `run` blocks: as written, from the repo root (helm template with .tools/bin/helm, the router's
  --help, ...).
- `run (against a fake stack)` blocks: against a PD router over fake engines, with the tutorial's
  http://127.0.0.1:8000 replaced by its address (run_pd.sh, /metrics, error examples).
- `run (against make demo)` blocks (tutorial 01): against the real `make demo` with vLLM CPU
  engines; an e2e test, skipped with PDSTACK_SKIP_E2E=1 like the rest of the e2e suite.

Blocks of one file run in order in one stack, since later blocks use earlier results.
"""

from __future__ import annotations

import os
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.docs.markdown import ROOT, Block, all_blocks, blocks, tutorial_files
from tests.docs.stacks import demo_stack, fake_pd_stack, run_block

pytestmark = pytest.mark.slow

HELM = ROOT / ".tools" / "bin" / "helm"


def _runnable(stack: str) -> list[Block]:
    return [b for b in all_blocks() if b.kind == "run" and b.stack == stack]


def _files_with(stack: str) -> list[Path]:
    return [p for p in tutorial_files() if any(b.stack == stack for b in _by_file(p))]


def _by_file(path: Path) -> list[Block]:
    return [b for b in blocks(path) if b.kind == "run"]


@pytest.fixture(scope="module")
def helm() -> Path:
    if not HELM.exists():
        pytest.fail("helm is missing: run `make tools` (scripts/install-tools.sh) first")
    return HELM


@pytest.mark.parametrize("block", _runnable(""), ids=lambda b: b.where)
def test_plain_block_runs(block: Block, helm: Path) -> None:
    out = run_block(block)
    assert out.strip(), f"{block.where} printed nothing"


@pytest.mark.parametrize("path", _files_with("fake"), ids=lambda p: p.name)
def test_blocks_against_a_fake_pd_stack(path: Path, tmp_path: Path) -> None:
    with fake_pd_stack() as url:
        for block in _by_file(path):
            if block.stack == "fake":
                out = run_block(block, router_url=url, workdir=tmp_path)
                assert out.strip(), f"{block.where} printed nothing"


def test_every_dashboard_and_tutorial_metric_is_served() -> None:
    # Names in tutorial 06 and the Grafana JSON must exist on a live router's /metrics.
    texts = (ROOT / "tutorials" / "06-observability.md").read_text()
    texts += (ROOT / "tutorials" / "assets" / "grafana-pdstack.json").read_text()
    wanted = set(re.findall(r"pdstack_router_[a-z0-9_]+", texts))
    wanted = {re.sub(r"_$", "", w) for w in wanted}
    with fake_pd_stack() as url:
        body = b'{"model": "tiny", "prompt": "hello", "max_tokens": 4}'
        req = urllib.request.Request(
            url + "/v1/completions", body, {"Content-Type": "application/json"}
        )
        urllib.request.urlopen(req, timeout=10).read()
        with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
            served_text = resp.read().decode()
    served = set(re.findall(r"^(?:# TYPE )?(pdstack_router_[a-z0-9_]+)", served_text, re.M))
    families = {re.sub(r"_(bucket|sum|count|total|created)$", "", s) for s in served}
    unknown = {
        w
        for w in wanted
        if w not in served
        and re.sub(r"_(bucket|sum|count|total)$", "", w) not in families
        and not w.endswith("_engine")  # the `pdstack_router_engine_{...}` brace pattern
    }
    assert not unknown, f"not served by the router: {sorted(unknown)}"


@pytest.mark.e2e
@pytest.mark.skipif(os.environ.get("PDSTACK_SKIP_E2E") == "1", reason="PDSTACK_SKIP_E2E=1")
def test_tutorial_01_against_make_demo() -> None:
    path = ROOT / "tutorials" / "01-quickstart-local.md"
    runnable = [b for b in _by_file(path) if b.stack == "demo"]
    assert runnable
    with demo_stack("pd") as url:
        outputs = [run_block(block, router_url=url) for block in runnable]
    joined = "\n".join(outputs)
    # What the tutorial tells the reader to look for: a real PD decision and both engine legs.
    assert 'decision="disaggregated"' in joined
    assert 'phase="prefill"' in joined and 'phase="decode"' in joined


def _helm_block(tutorial: str, marker: str) -> str:
    """The helm command of a tutorial's run block that contains `marker`, without its grep."""
    path = ROOT / "tutorials" / tutorial
    block = next(b for b in _by_file(path) if marker in b.text)
    command = block.text.split("| grep")[0]
    return command.replace("\\\n", " ")


def test_tutorial_06_labels_every_service_monitor_for_kube_prometheus_stack(helm: Path) -> None:
    # kube-prometheus-stack selects ServiceMonitors by `release`: an unlabelled engine one means
    # no vllm:* series, so no dashboards and no autoscaling.
    command = _helm_block("06-observability.md", "servicemonitor.yaml")
    run = subprocess.run(
        ["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, check=True
    )
    monitors = [d for d in yaml.safe_load_all(run.stdout) if d]
    assert {m["metadata"]["name"] for m in monitors} == {"vllm-engines", "vllm-router"}
    for monitor in monitors:
        assert monitor["metadata"]["labels"].get("release") == "kube-prometheus-stack", monitor


# production-stack's object names (helm/templates at a6c01db0) and its default labels.
PRODUCTION_STACK_NAMES = {
    ("Deployment", "engine"): "<release>-<name>-deployment-vllm",
    ("Deployment", "router"): "<release>-deployment-router",
    ("Deployment", "cache-server"): "<release>-deployment-cache-server",
    ("ServiceAccount", "router"): "<release>-router-service-account",
    ("Role", "router"): "<release>-reader",
    ("RoleBinding", "router"): "<release>-deployment-access-binding",
}
PRODUCTION_STACK_LABELS = [
    "environment: test",
    "release: test",
    "environment: router",
    "release: router",
    "model: <name>",
    "helm-release-name",
    "app.kubernetes.io/component: serving-engine",
]


def test_migration_tables_cover_renamed_objects_and_dropped_labels(helm: Path) -> None:
    run = subprocess.run(
        [
            str(HELM),
            "template",
            "release",
            "charts/pdstack",
            "-f",
            "values/values-lmcache-cacheserver.yaml",
            "--set",
            "routerSpec.repository=localhost/pdstack-router",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    docs = [d for d in yaml.safe_load_all(run.stdout) if d]
    specs = {"mistral-prefill", "mistral-decode"}
    ours = {}
    for doc in docs:
        component = doc["metadata"].get("labels", {}).get("pdstack.io/component")
        key = (doc["kind"], component)
        if key in PRODUCTION_STACK_NAMES:
            name = doc["metadata"]["name"].replace("release-", "<release>-", 1)
            for spec in specs:
                name = name.replace(spec, "<name>")
            ours[key] = name
    assert set(ours) == set(PRODUCTION_STACK_NAMES)
    for where in ("tutorials/08-migrating-from-production-stack.md", "docs/chart.md"):
        text = (ROOT / where).read_text()
        rows = [line for line in text.splitlines() if line.startswith("|")]
        for key, theirs in PRODUCTION_STACK_NAMES.items():
            assert any(theirs in row and ours[key] in row for row in rows), (
                f"{where}: no table row maps {theirs} to {ours[key]}"
            )
        for label in PRODUCTION_STACK_LABELS:
            assert any(label in row for row in rows), f"{where}: label {label} not in a table"
