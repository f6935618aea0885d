"""Run pods on the kwok nodes of a cluster made by scripts/k8s/cluster.sh.

    python -m tests.cluster.podrunner --kubeconfig .cluster/kubeconfig --state .cluster/runner

Stops (SIGTERM) every process it started when it gets SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

import yaml
from kubernetes_asyncio import client, config

from tests.cluster.podrunner.kube import KubeApi
from tests.cluster.podrunner.kubelet import Kubelet


async def main(kubeconfig: Path, state: Path) -> None:
    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    ca = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["certificate-authority"]
    async with client.ApiClient(configuration) as api_client:
        kubelet = Kubelet(KubeApi(api_client, configuration.host, Path(ca)), state)
        ready = asyncio.Event()
        serving = asyncio.create_task(kubelet.serve(ready))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await ready.wait()
        print("PODRUNNER_READY", flush=True)
        done, _ = await asyncio.wait(
            [serving, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED
        )
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        if serving in done and serving.exception() is not None:
            raise serving.exception()  # type: ignore[misc]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--state", type=Path, required=True, help="folder for pod volumes and logs")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args()
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(main(args.kubeconfig, args.state.resolve()))
