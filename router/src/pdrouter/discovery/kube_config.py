"""Finding the Kubernetes API: in-cluster service account first, then the kubeconfig.

File reads run in a worker thread so loading never stalls the router's event loop.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from kubernetes_asyncio.client import Configuration
from kubernetes_asyncio.config import ConfigException, load_incluster_config
from kubernetes_asyncio.config.kube_config import KubeConfigLoader, KubeConfigMerger

SERVICE_ACCOUNT_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
DEFAULT_KUBECONFIG = "~/.kube/config"


class KubeConfigError(RuntimeError):
    """Neither in-cluster config nor a usable kubeconfig was found."""


async def load_kube_configuration(
    kubeconfig: str | None = None, context: str | None = None
) -> Configuration:
    """A client configuration for the cluster this router runs in, or the kubeconfig's.

    An explicit `kubeconfig` path skips in-cluster detection. Otherwise in-cluster config is
    tried first, then `$KUBECONFIG` (colon separated list), then `~/.kube/config`.
    """
    configuration = Configuration()
    in_cluster_error = ""
    if kubeconfig is None:
        try:
            await asyncio.to_thread(load_incluster_config, client_configuration=configuration)
            return configuration
        except ConfigException as exc:
            in_cluster_error = f"not in a cluster ({exc}); "
    paths = kubeconfig or os.environ.get("KUBECONFIG") or DEFAULT_KUBECONFIG
    merger = await asyncio.to_thread(KubeConfigMerger, paths)
    if merger.config is None:
        raise KubeConfigError(f"{in_cluster_error}no kubeconfig found at {paths}")
    try:
        loader = KubeConfigLoader(config_dict=merger.config, active_context=context)
        await loader.load_and_set(configuration)
    except ConfigException as exc:
        raise KubeConfigError(f"{in_cluster_error}kubeconfig {paths}: {exc}") from exc
    return configuration


def service_account_namespace() -> str | None:
    """The namespace of the pod this process runs in, when it runs in one."""
    try:
        return SERVICE_ACCOUNT_NAMESPACE_FILE.read_text().strip() or None
    except OSError:
        return None
