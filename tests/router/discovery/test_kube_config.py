"""Finding the API server: in-cluster first, then kubeconfig; namespace defaulting."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes_asyncio.config import incluster_config
from pdrouter.discovery import kube_config
from pdrouter.discovery.k8s import KubeConfigError, create_k8s_discovery
from pdrouter.discovery.kube_config import load_kube_configuration

KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- {{name: one, cluster: {{server: "http://127.0.0.1:{one}"}}}}
- {{name: two, cluster: {{server: "http://127.0.0.1:{two}"}}}}
contexts:
- {{name: one, context: {{cluster: one, user: u}}}}
- {{name: two, context: {{cluster: two, user: u}}}}
current-context: one
users:
- {{name: u, user: {{token: t0k}}}}
"""


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG.format(one=6001, two=6002))
    return path


@pytest.fixture
def outside_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    monkeypatch.setattr(
        kube_config, "SERVICE_ACCOUNT_NAMESPACE_FILE", tmp_path / "no-such-namespace-file"
    )


@pytest.fixture
def inside_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake the service-account files and env a pod gets (nothing is contacted)."""
    (tmp_path / "token").write_text("sa-token")
    (tmp_path / "ca.crt").write_text("not parsed by this test\n")
    (tmp_path / "namespace").write_text("llm-prod\n")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(tmp_path / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(tmp_path / "ca.crt"))
    monkeypatch.setattr(kube_config, "SERVICE_ACCOUNT_NAMESPACE_FILE", tmp_path / "namespace")


@pytest.mark.usefixtures("outside_cluster")
async def test_kubeconfig_from_env_when_not_in_cluster(
    kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", f"/nonexistent/config:{kubeconfig}")
    configuration = await load_kube_configuration()
    assert configuration.host == "http://127.0.0.1:6001"
    assert configuration.api_key["BearerToken"] == "Bearer t0k"


@pytest.mark.usefixtures("outside_cluster")
async def test_explicit_kubeconfig_and_context(kubeconfig: Path) -> None:
    configuration = await load_kube_configuration(kubeconfig=str(kubeconfig), context="two")
    assert configuration.host == "http://127.0.0.1:6002"


@pytest.mark.usefixtures("outside_cluster")
async def test_no_config_anywhere_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(KubeConfigError, match="no kubeconfig found"):
        await create_k8s_discovery("llm", "app=x", 8000)


@pytest.mark.usefixtures("outside_cluster")
async def test_unknown_context_is_a_clear_error(kubeconfig: Path) -> None:
    with pytest.raises(KubeConfigError, match="kubeconfig"):
        await load_kube_configuration(kubeconfig=str(kubeconfig), context="three")


@pytest.mark.usefixtures("outside_cluster")
async def test_empty_namespace_outside_cluster_is_default(
    kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    discovery = await create_k8s_discovery("", "app=x", 8000)
    assert discovery.namespace == "default"
    await discovery.stop()  # never started: harmless


@pytest.mark.usefixtures("inside_cluster")
async def test_in_cluster_config_is_preferred(
    kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    discovery = await create_k8s_discovery(None, "app=x", 8000)
    assert discovery.namespace == "llm-prod"  # the pod's own namespace
    configuration = await load_kube_configuration()
    assert configuration.host == "https://127.0.0.1:6443"
    assert configuration.api_key["BearerToken"] == "Bearer sa-token"
