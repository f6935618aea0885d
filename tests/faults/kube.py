"""The fake Kubernetes API server (a test double) on a background thread, serving engine pods
that a test adds and removes while the router watches.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import uuid
from pathlib import Path
from typing import Any

from tests.doubles.engine_proc import FakeEngine
from tests.router.discovery.fake_kube_api import FakeKubeApiServer, WatchScript

NAMESPACE = "pdstack-faults"
SELECTOR = "pdstack.io/component=engine"


def engine_pod(
    engine: FakeEngine, role: str, uid: str, extra: dict[str, str] | None = None
) -> dict[str, Any]:
    """A Running, Ready pod for a fake engine on loopback, labelled as the chart does; `extra`
    adds labels (a relabel changes the pod's metadata, not its identity)."""
    return {
        "metadata": {
            "name": f"engine-{role}-{engine.port}",
            "namespace": NAMESPACE,
            "uid": uid,
            "labels": {
                "app.kubernetes.io/instance": "faults",
                "pdstack.io/component": "engine",
                "pdstack.io/role": role,
                "pdstack.io/model-spec": "tiny",
                **(extra or {}),
            },
            "annotations": {"pdstack.io/model": "tiny", "pdstack.io/port": str(engine.port)},
        },
        "status": {
            "phase": "Running",
            "podIP": "127.0.0.1",
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


class KubeApiThread:
    """Runs FakeKubeApiServer on its own event loop; `set_pods` changes what lists return."""

    def __init__(self) -> None:
        self._versions = itertools.count(1000)
        self.server = FakeKubeApiServer(
            lists=[self._pod_list([])], watches=[WatchScript([], hold_open=True)]
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.__aenter__(), self._loop).result(10)
        self.pods: dict[str, tuple[FakeEngine, str]] = {}  # uid -> (engine, role)
        self.extra_labels: dict[str, dict[str, str]] = {}  # uid -> labels a test added

    def _pod_list(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "kind": "PodList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": str(next(self._versions))},
            "items": items,
        }

    def add(self, engine: FakeEngine, role: str) -> str:
        uid = str(uuid.uuid4())
        self.pods[uid] = (engine, role)
        self._publish()
        return uid

    def remove(self, uid: str) -> None:
        self.pods.pop(uid)
        self.extra_labels.pop(uid, None)
        self._publish()

    def relabel(self, uid: str, **labels: str) -> None:
        """Change a pod's labels in place (same uid): what `kubectl label` or a controller does."""
        self.extra_labels[uid] = dict(labels)
        self._publish()

    def _publish(self) -> None:
        items = [
            engine_pod(e, role, uid, self.extra_labels.get(uid))
            for uid, (e, role) in self.pods.items()
        ]
        self.server.lists = [self._pod_list(items)]  # the next (re-)list returns this

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: fake\n  cluster: {{server: {self.server.url}}}\n"
            "contexts:\n- name: fake\n"
            f"  context: {{cluster: fake, user: t, namespace: {NAMESPACE}}}\n"
            "current-context: fake\nusers:\n- name: t\n  user: {token: test-token}\n"
        )
        return path

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(
            self.server.__aexit__(None, None, None), self._loop
        ).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
