"""production-stack's 26 tutorial values files, rendered by the pdstack chart.

A production-stack user's first try is `helm install -f <their file>`. For each file this
asserts what they see: the chart renders it, or the render fails with a message that names the
key to change (never a silent success that breaks later). The files are test data taken
unchanged from vllm-project/production-stack (Apache-2.0; see fixtures/production-stack/).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.chart.helm import helm_template

pytestmark = pytest.mark.chart

FIXTURES = Path(__file__).parent / "fixtures" / "production-stack"
# What docs/chart.md tells a production-stack user to add: pdstack's router image.
ROUTER_IMAGE = [
    "--set",
    "routerSpec.repository=localhost/pdstack-router",
    "--set",
    "routerSpec.tag=",
]

NO_ROUTER = "routerSpec.repository is required: the pdstack router image is not published yet"
PS_ROUTER = "is production-stack's router image; the chart starts `pdstack-router`"
LMCACHE_CMD = "the lmcache/vllm-openai image keeps vllm in /opt/venv/bin"
OK = ""

# file -> (as the user has it, with pdstack's router image named); "" = renders.
EXPECTED: dict[str, tuple[str, str]] = {
    # Aggregated files: no role (defaults to both), no KV transfer: they install.
    "values-01-minimal-example.yaml": (NO_ROUTER, OK),
    "values-01-minimal-amd-example.yaml": (NO_ROUTER, OK),  # nodeSelectorTerms, amd.com/gpu
    "values-02-basic-config.yaml": (NO_ROUTER, OK),  # pvcAccessMode as a list
    "values-03-match-pv.yaml": (NO_ROUTER, OK),  # pvcMatchLabels
    "values-04-multiple-models.yaml": (NO_ROUTER, OK),  # maxLoras
    "values-11-secure-vllm.yaml": (PS_ROUTER, OK),  # localhost:5000/git-act-router
    "values-19-sleep-mode-aware.yaml": (NO_ROUTER, OK),
    # Keys that would crash at run time: refused at render, naming the fix.
    "values-05-cpu-offloading.yaml": (LMCACHE_CMD, LMCACHE_CMD),
    "values-18-prefix-aware.yaml": (LMCACHE_CMD, LMCACHE_CMD),
    "values-23-SR.yaml": (LMCACHE_CMD, LMCACHE_CMD),
    # Fractional GPUs are not a Kubernetes extended resource.
    "values-01-2pods-minimal-example.yaml": ("/requestGPU': got number, want integer",) * 2,
    # Keys pdstack does not have: the schema names each.
    "gke-example-values-01-offload-kv-cache-local-disk.yaml": (
        "additional properties 'diskOffloadingBufferSize' not allowed",
    )
    * 2,
    "values-06-shared-storage.yaml": ("additional properties 'initContainer' not allowed",) * 2,
    "values-09-lora-helm.yaml": ("additional properties 'enableLoRA' not allowed",) * 2,
    "values-09-lora-operator.yaml": ("additional properties 'enableLoRA' not allowed",) * 2,
    "values-12-otel-vllm.yaml": ("at '/routerSpec': additional properties 'otel' not allowed",) * 2,
    "values-13-tool-enabled.yaml": (
        "properties 'chatTemplateConfigMap' required, if 'chatTemplate' exists",
    )
    * 2,
    # production-stack reads cacheserverSpec.image; these files' top-level keys were dead there.
    "values-14-vllm-v1.yaml": ("at '/cacheserverSpec': additional properties",) * 2,
    "values-15-a-minimal-pipeline-parallel-example-raycluster.yaml": (
        "additional properties 'raySpec' not allowed",
    )
    * 2,
    "values-15-b-minimal-pipeline-parallel-example-multiple-modelspec.yaml": (
        "additional properties 'raySpec' not allowed",
    )
    * 2,
    # LMCache v0.2-era NIXL keys: values/values-production-stack-pd.yaml is this file migrated.
    "values-16-disagg-prefill.yaml": ("additional properties 'enablePD' not allowed",) * 2,
    "values-17-kv-aware.yaml": ("'lmcacheControllerHeartbeatPort'",) * 2,
    "values-22-gateway-api.yaml": ("at '/routerSpec': additional properties 'route' not allowed",)
    * 2,
    # vLLM's V0 engine no longer exists.
    "values-25-v100-multi-gpu-tp2.yaml": ("additional properties 'v0' not allowed",) * 2,
    "values-25-v100-multi-gpu-tp4.yaml": ("additional properties 'v0' not allowed",) * 2,
    "values-25-v100-single-gpu.yaml": ("additional properties 'v0' not allowed",) * 2,
}


def _render(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return helm_template("-f", str(path), *extra)


def test_all_26_files_are_covered() -> None:
    files = sorted(p.name for p in FIXTURES.glob("*.yaml"))
    assert len(files) == 26
    assert sorted(EXPECTED) == files


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_production_stack_file(tools: None, name: str) -> None:
    as_is, with_router = EXPECTED[name]
    for extra, expected in (([], as_is), (ROUTER_IMAGE, with_router)):
        run = _render(FIXTURES / name, *extra)
        where = f"{name} {' '.join(extra) or '(as is)'}"
        if expected == OK:
            assert run.returncode == 0, f"{where} failed:\n{run.stderr}"
            docs = [d for d in yaml.safe_load_all(run.stdout) if d]
            engines = [
                d
                for d in docs
                if d["kind"] == "Deployment"
                and d["metadata"]["labels"].get("pdstack.io/component") == "engine"
            ]
            assert engines, f"{where}: no engine Deployment"
            # Without a role these are aggregated engines: labelled so, and no KV transfer flag.
            for engine in engines:
                pod = engine["spec"]["template"]
                assert pod["metadata"]["labels"]["pdstack.io/role"] == "both"
                assert "--kv-transfer-config" not in pod["spec"]["containers"][0]["args"]
        else:
            assert run.returncode != 0, f"{where} rendered, expected: {expected}"
            assert expected in run.stderr, f"{where}:\n{run.stderr}"


def test_prefixaware_file_routes_prefix_aware_once_its_command_is_fixed(tools: None) -> None:
    """values-18 asks for production-stack's `prefixaware`; with the command its image needs
    (and pdstack's router image) it renders and the router runs prefix_aware."""
    run = _render(
        FIXTURES / "values-18-prefix-aware.yaml",
        *ROUTER_IMAGE,
        "--set",
        "servingEngineSpec.command={/opt/venv/bin/vllm}",
    )
    assert run.returncode == 0, run.stderr
    router = next(
        d
        for d in yaml.safe_load_all(run.stdout)
        if d and d["kind"] == "Deployment" and d["metadata"]["name"] == "vllm-router"
    )
    args = router["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--routing-logic") + 1] == "prefix_aware"


def test_kv_aware_file_is_refused_naming_prefix_aware(tools: None, tmp_path: Path) -> None:
    """values-17 without the LMCache-controller keys pdstack does not have: its `kvaware` routing
    is refused with the alternative named."""
    values = yaml.safe_load((FIXTURES / "values-17-kv-aware.yaml").read_text())
    for key in (
        "lmcacheControllerPort",
        "lmcacheControllerReplyPort",
        "lmcacheControllerHeartbeatPort",
    ):
        del values["routerSpec"][key]
    lmcache = values["servingEngineSpec"]["modelSpec"][0]["lmcacheConfig"]
    values["servingEngineSpec"]["modelSpec"][0]["lmcacheConfig"] = {
        k: v for k, v in lmcache.items() if k in {"enabled", "cpuOffloadingBufferSize", "logLevel"}
    }
    values["servingEngineSpec"]["command"] = ["/opt/venv/bin/vllm"]
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    run = _render(path, *ROUTER_IMAGE)
    assert run.returncode != 0
    assert "kvaware" in run.stderr and "use prefix_aware" in run.stderr, run.stderr


def test_pd_file_router_flags_are_refused(tools: None, tmp_path: Path) -> None:
    """values-16's router flags (--prefill-model-labels ...) with pdstack's router would crash it
    ("unrecognized arguments"): the render names the flag and what replaces it."""
    values = yaml.safe_load((FIXTURES / "values-16-disagg-prefill.yaml").read_text())
    path = tmp_path / "values.yaml"
    path.write_text(
        yaml.safe_dump({"routerSpec": {"extraArgs": values["routerSpec"]["extraArgs"]}})
    )
    run = _render(path, *ROUTER_IMAGE)
    assert run.returncode != 0
    assert "routerSpec.extraArgs[0]: --prefill-model-labels is a production-stack router flag" in (
        run.stderr
    )
