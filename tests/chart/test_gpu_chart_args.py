"""The GPU PD check starts its engines with what the chart renders (scripts/gpu/chart-engines.json,
committed because the GPU machine has no helm). This renders the values files again and fails
while the committed file is stale: run scripts/gpu/render-chart-args.sh after a chart change."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.chart.helm import HELM, ROOT, helm_env

pytestmark = pytest.mark.chart
COMMITTED = ROOT / "scripts" / "gpu" / "chart-engines.json"


def test_gpu_check_uses_what_the_chart_renders(tools: None, tmp_path: Path) -> None:
    out = tmp_path / "chart-engines.json"
    run = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu" / "render-chart-args.sh"), str(out)],
        env={**helm_env(), "HELM": str(HELM), "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    rendered = json.loads(out.read_text())
    assert rendered == json.loads(COMMITTED.read_text()), (
        "scripts/gpu/chart-engines.json is stale: run scripts/gpu/render-chart-args.sh"
    )
    # What the check relies on is there: both connectors, both roles, LMCache configs.
    nixl, lmcache = rendered["nixl"]["engines"], rendered["lmcache"]["engines"]
    assert {"prefill", "decode"} <= set(nixl) and {"prefill", "decode"} <= set(lmcache)
    assert lmcache["prefill"]["lmcache_config"]["pd_role"] == "sender"
    assert lmcache["decode"]["lmcache_config"]["pd_role"] == "receiver"
    assert "--kv-transfer-config" in nixl["prefill"]["args"]
