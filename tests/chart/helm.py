"""The pinned helm of .tools/, as the chart scripts run it (plugins and caches inside .tools/)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "pdstack"
TOOLS = ROOT / ".tools"
HELM = TOOLS / "bin" / "helm"
# The router image the tutorials name after `make image` (the chart requires one).
ROUTER_REPOSITORY = "localhost/pdstack-router"
ROUTER_IMAGE = ["--set", f"routerSpec.repository={ROUTER_REPOSITORY}"]


def helm_env() -> dict[str, str]:
    """Keep helm's plugins and caches inside .tools/, as the scripts do."""
    env = dict(os.environ)
    helm_home = TOOLS / "helm"
    env.update(
        HELM_PLUGINS=str(helm_home / "plugins"),
        HELM_DATA_HOME=str(helm_home / "data"),
        HELM_CONFIG_HOME=str(helm_home / "config"),
        HELM_CACHE_HOME=str(helm_home / "cache"),
    )
    return env


def run_script(name: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run scripts/NAME ARGS... from the repository, captured, with helm's homes in .tools/."""
    return subprocess.run(
        [str(ROOT / "scripts" / name), *args],
        capture_output=True,
        text=True,
        check=False,
        env=helm_env(),
        timeout=timeout,
    )


def helm_template(*args: str, chart: Path = CHART) -> subprocess.CompletedProcess[str]:
    """`helm template vllm <chart> ARGS...`, captured; the caller checks the outcome."""
    return subprocess.run(
        [str(HELM), "template", "vllm", str(chart), *args],
        capture_output=True,
        text=True,
        check=False,
        env=helm_env(),
        timeout=120,
    )
