"""The Helm chart under pytest: the full chart-test run, and bad values rejected by name.

The tools (helm, helm-unittest, kubeconform) are installed by scripts/install-tools.sh into
.tools/; these tests call the real binaries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.helm import ROOT, ROUTER_IMAGE, helm_template, run_script

pytestmark = pytest.mark.chart


@pytest.mark.slow
def test_chart_test_script_passes(tools: None) -> None:
    """lint --strict, helm unittest and kubeconform on every values file all pass."""
    run = run_script("chart-test.sh", timeout=1200)
    assert run.returncode == 0, f"chart-test.sh failed:\n{run.stdout}\n{run.stderr}"
    assert "0 failed" in run.stdout


def _spec(name: str, role: str, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name, "role": role, "modelURL": "org/model"}
    if role != "both":
        spec["kvTransfer"] = {"connector": "NixlConnector"}
    spec.update(extra)
    return spec


def _pd(**router: Any) -> dict[str, Any]:
    """A valid NIXL prefill/decode pair; tests break one thing at a time."""
    return {
        "servingEngineSpec": {"modelSpec": [_spec("p", "prefill"), _spec("d", "decode")]},
        "routerSpec": {"routingLogic": "disagg_prefill", "repository": "r/router", **router},
    }


def _lmcache_pd(**router: Any) -> dict[str, Any]:
    lmcache = {"enabled": True, "enablePD": True}
    return {
        "servingEngineSpec": {
            "modelSpec": [
                {"name": "p", "role": "prefill", "modelURL": "org/m", "lmcacheConfig": lmcache},
                {"name": "d", "role": "decode", "modelURL": "org/m", "lmcacheConfig": lmcache},
            ]
        },
        "routerSpec": {"routingLogic": "disagg_prefill", "repository": "r/router", **router},
    }


def _with_spec(values: dict[str, Any], index: int, **changes: Any) -> dict[str, Any]:
    values["servingEngineSpec"]["modelSpec"][index].update(changes)
    return values


# (id, values, text the error must contain: the bad key or value path)
BAD_VALUES: list[tuple[str, dict[str, Any], str]] = [
    (
        "unknown-spec-key",
        _with_spec(_pd(), 0, replicas=2),
        "additional properties 'replicas' not allowed",
    ),
    (
        "misspelt-router-key",
        _pd(routingLogik="roundrobin"),
        "additional properties 'routingLogik' not allowed",
    ),
    (
        "dead-vllm-key",
        _with_spec(_pd(), 1, vllmConfig={"v1": 1}),
        "/servingEngineSpec/modelSpec/1/vllmConfig': additional properties 'v1'",
    ),
    (
        "hand-wired-peer",
        _with_spec(_lmcache_pd(), 0, lmcacheConfig={"enabled": True, "nixlPeerHost": "x"}),
        "additional properties 'nixlPeerHost' not allowed",
    ),
    ("bad-role", _with_spec(_pd(), 0, role="prefil"), "/servingEngineSpec/modelSpec/0/role"),
    (
        "bad-connector",
        _with_spec(_pd(), 1, kvTransfer={"connector": "Nixl"}),
        "/servingEngineSpec/modelSpec/1/kvTransfer/connector",
    ),
    (
        "prefill-without-decode",
        {
            "servingEngineSpec": {"modelSpec": [_spec("p", "prefill")]},
            "routerSpec": {"routingLogic": "disagg_prefill"},
        },
        "no spec with role: decode",
    ),
    (
        "different-weights",
        _with_spec(_pd(), 1, modelURL="org/other", servedModelName="org/model"),
        "servingEngineSpec.modelSpec[1].modelURL",
    ),
    (
        "block-size-mismatch",
        _with_spec(_pd(), 1, vllmConfig={"blockSize": 32}),
        "servingEngineSpec.modelSpec[1].vllmConfig.blockSize",
    ),
    (
        "lmcache-two-routers",
        _lmcache_pd(replicaCount=2),
        "routerSpec.replicaCount must be 1",
    ),
    (
        "pd-with-roundrobin",
        _pd(routingLogic="roundrobin"),
        "routerSpec.routingLogic",
    ),
]


@pytest.mark.parametrize(
    ("values", "expected"),
    [pytest.param(v, e, id=i) for i, v, e in BAD_VALUES],
)
def test_bad_values_fail_naming_the_key(
    tools: None, tmp_path: Path, values: dict[str, Any], expected: str
) -> None:
    """helm template refuses the values and its error names what to fix."""
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    run = helm_template("-f", str(values_file))
    assert run.returncode != 0, f"helm template accepted bad values:\n{run.stdout[:2000]}"
    assert expected in run.stderr, run.stderr


def test_good_values_render(tools: None, tmp_path: Path) -> None:
    """The unbroken fixture renders, so the failures above are the broken key's doing."""
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(_pd()))
    run = helm_template("-f", str(values_file), *ROUTER_IMAGE)
    assert run.returncode == 0, run.stderr
    kinds = [doc["kind"] for doc in yaml.safe_load_all(run.stdout) if doc]
    assert kinds.count("Deployment") == 3


def test_prometheus_adapter_rule_serves_the_hpa_metric(tools: None) -> None:
    """tutorials/assets/prometheus-adapter-values.yaml publishes, per pod, the metric the chart's
    HPAs ask for, from the series the engine ServiceMonitor scrapes."""
    run = helm_template(
        "-f",
        str(ROOT / "values" / "values-xpyd.yaml"),
        *ROUTER_IMAGE,
        "--show-only",
        "templates/hpa.yaml",
    )
    assert run.returncode == 0, run.stderr
    hpas = [d for d in yaml.safe_load_all(run.stdout) if d]
    wanted = {m["pods"]["metric"]["name"] for h in hpas for m in h["spec"]["metrics"]}
    adapter = yaml.safe_load(
        (ROOT / "tutorials" / "assets" / "prometheus-adapter-values.yaml").read_text()
    )
    served = {}
    for rule in adapter["rules"]["custom"]:
        assert rule["resources"]["overrides"] == {
            "namespace": {"resource": "namespace"},
            "pod": {"resource": "pod"},
        }
        served[rule["name"]["as"]] = rule["seriesQuery"]
    assert wanted and wanted <= set(served), f"HPAs read {wanted}, the adapter serves {set(served)}"
    for name in wanted:
        assert served[name].startswith(name + "{")
