"""Release packaging (scripts/release-chart.sh, run by .github/workflows/release.yaml) and the
pinned (vLLM, NIXL, LMCache) versions every shipped values file uses."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.helm import CHART, ROOT, ROUTER_IMAGE, helm_template, run_script

pytestmark = pytest.mark.chart

CHART_META = yaml.safe_load((CHART / "Chart.yaml").read_text())
TESTED = {k.split("tested-")[1]: v for k, v in CHART_META["annotations"].items() if "tested-" in k}
PUBLISHED = "ghcr.io/example/pdstack-router"


def _release(tag: str, out: Path) -> subprocess.CompletedProcess[str]:
    return run_script("release-chart.sh", tag, PUBLISHED, str(out), timeout=300)


def _docs(run: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert run.returncode == 0, run.stderr
    return [d for d in yaml.safe_load_all(run.stdout) if d]


def test_released_chart_runs_the_published_router_image(tools: None, tmp_path: Path) -> None:
    version = CHART_META["version"]
    run = _release(f"v{version}", tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    package = tmp_path / f"pdstack-{version}.tgz"
    assert package.is_file()
    # Installing the released chart needs no router image: it names the one the release pushed.
    docs = _docs(helm_template("-f", str(ROOT / "values" / "values-pd.yaml"), chart=package))
    router = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "vllm-router"
    )
    image = router["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"{PUBLISHED}:{CHART_META['appVersion']}"
    listing = subprocess.run(
        ["tar", "tzf", str(package)], capture_output=True, text=True, check=True
    )
    assert "pdstack/tests/" not in listing.stdout


def test_release_refuses_a_tag_that_is_not_the_chart_version(tools: None, tmp_path: Path) -> None:
    run = _release("v99.0.0", tmp_path)
    assert run.returncode != 0
    assert "tag v99.0.0 must be v<chart version>" in run.stderr
    assert not list(tmp_path.glob("*.tgz"))


def _engine_images(values_file: Path) -> set[str]:
    docs = _docs(
        helm_template(
            "-f", str(values_file), *ROUTER_IMAGE, "--set", "cacheserverSpec.enabled=true"
        )
    )
    images = set()
    for doc in docs:
        if doc["kind"] == "Deployment" and doc["metadata"]["name"] != "vllm-router":
            images |= {c["image"] for c in doc["spec"]["template"]["spec"]["containers"]}
    return images


@pytest.mark.parametrize(
    "values_file", sorted((ROOT / "values").glob("*.yaml")), ids=lambda p: p.name
)
def test_values_files_pin_the_tested_triple(tools: None, values_file: Path) -> None:
    """Every engine and cache server image is a release of the tested set (Chart.yaml)."""
    allowed = {
        f"vllm/vllm-openai:v{TESTED['vllm']}",
        f"public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v{TESTED['vllm']}",
        f"lmcache/vllm-openai:v{TESTED['lmcache']}",
    }
    images = _engine_images(values_file)
    assert images and images <= allowed, f"{values_file.name}: {sorted(images - allowed)}"


def test_the_triple_is_the_gpu_tested_one_and_recorded_in_docs() -> None:
    assert TESTED == {"vllm": "0.26.0", "nixl": "1.5.1", "lmcache": "0.5.6"}
    text = (ROOT / "docs" / "chart.md").read_text()
    for name, version in (("vLLM", "vllm"), ("NIXL", "nixl"), ("LMCache", "lmcache")):
        assert f"{name} {TESTED[version]}" in text, (
            f"docs/chart.md does not name {name} {TESTED[version]}"
        )
