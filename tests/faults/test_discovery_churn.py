"""Discovery churn: engines join and leave (gracefully) through Kubernetes discovery while load
runs, and no request fails because of an engine that left.

A graceful leave is what a rolling update does: the pod is removed from discovery first (it
turns terminating / not ready), and the engine stops only after its in-flight work is done.
The API server is the fake Kubernetes API (a test double); the router's real k8s discovery
watches it and re-lists every half second.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.doubles.engine_proc import FakeEngine
from tests.faults.kube import NAMESPACE, SELECTOR, KubeApiThread
from tests.faults.report import MatrixRecorder, MatrixRow
from tests.faults.stack import Load, engine_view, in_flight_total, wait_for
from tests.harness.router_proc import RouterProcess

pytestmark = [pytest.mark.faults, pytest.mark.slow]
DRAIN_S = 1.5  # a leaving engine keeps serving this long after discovery dropped it


def _router(kubeconfig: Path) -> RouterProcess:
    args = [
        "--service-discovery",
        "k8s",
        "--k8s-namespace",
        NAMESPACE,
        "--k8s-label-selector",
        SELECTOR,
        "--k8s-relist-interval",
        "0.5",
        "--routing-logic",
        "disagg_prefill",
        "--engine-scrape-interval",
        "0.5",
        "--prefill-timeout",
        "3",
        "--first-byte-timeout",
        "3",
        "--idle-timeout",
        "3",
    ]
    env = {"KUBECONFIG": str(kubeconfig), "KUBERNETES_SERVICE_HOST": ""}
    return RouterProcess(args, env)


def _leave(api: KubeApiThread, router: RouterProcess, uid: str, engine: FakeEngine) -> None:
    api.remove(uid)
    assert wait_for(lambda: engine.url not in engine_view(router), 5), "still routed"
    time.sleep(DRAIN_S)  # in-flight requests (and KV pulls from a prefill engine) finish
    engine.stop()


def test_engines_join_and_leave_under_load(
    kube: tuple[KubeApiThread, Path], fake_engine_factory: Any, matrix: MatrixRecorder
) -> None:
    api, kubeconfig = kube
    p = [fake_engine_factory(role="prefill") for _ in range(3)]
    d = [fake_engine_factory(role="decode", itl_ms=20) for _ in range(3)]
    uids = {e.url: api.add(e, "prefill") for e in p[:2]}
    uids |= {e.url: api.add(e, "decode") for e in d[:2]}
    router = _router(kubeconfig).start()
    try:
        load = Load(router.url)
        time.sleep(1)
        # Join: a third prefill and decode engine take traffic.
        uids[p[2].url] = api.add(p[2], "prefill")
        uids[d[2].url] = api.add(d[2], "decode")
        assert wait_for(lambda: len(engine_view(router)) == 6, 5)
        time.sleep(1.5)
        # Graceful leaves, one of each role, then one rejoins on the same address.
        _leave(api, router, uids.pop(p[0].url), p[0])
        gone = f'engine="engine-decode-{d[0].port}"'  # the pod's name labels its series
        assert gone in router.metrics()
        _leave(api, router, uids.pop(d[0].url), d[0])
        # A departed engine's labelled series go with it (pod names never come back).
        assert wait_for(lambda: gone not in router.metrics(), 5), "its series stayed"
        time.sleep(1)
        p[0].start()
        uids[p[0].url] = api.add(p[0], "prefill")
        assert wait_for(lambda: p[0].url in engine_view(router), 5)
        time.sleep(1.5)
        answers = load.stop()
        assert wait_for(lambda: in_flight_total(router) == 0, 3)
    finally:
        router.stop()
    total = sum(answers.values())
    matrix.add(
        MatrixRow(
            "discovery churn (k8s): 2 engines join, 2 leave gracefully, 1 rejoins, under load",
            "k8s 2P2D..3P3D",
            "every request 200",
            ", ".join(f"{k}: {v}" for k, v in sorted(answers.items())),
            0.0,
            0.0,
        )
    )
    assert answers == Counter({"200": total}), answers
    assert total >= 20
    assert p[2].stats()["by_kind"].get("prefill", 0) > 0, "the joining prefill got nothing"
    assert sum(d[2].stats()["by_path"].values()) > 0, "the joining decode got nothing"
