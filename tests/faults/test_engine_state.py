"""Engine state has one owner: breakers that never stick, in-flight counts that survive
discovery changes, and health, load and breaker kept as separate signals.

Each scenario runs the real router as a process over fake engine processes (the test double).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.doubles.engine_proc import FakeEngine
from tests.faults.kube import NAMESPACE, SELECTOR, KubeApiThread
from tests.faults.report import MatrixRecorder, MatrixRow
from tests.faults.stack import (
    Load,
    engine_view,
    in_flight_total,
    raw_request,
    request_body,
    wait_for,
)
from tests.harness.router_proc import RouterProcess, static_args

pytestmark = pytest.mark.faults
BREAKER = ["--breaker-failure-threshold", "2", "--breaker-cooldown", "1"]


def _completion(client: httpx.Client, url: str) -> int:
    resp = client.post(url + "/v1/completions", json=request_body(max_tokens=2))
    return resp.status_code


def _open_breaker(router: RouterProcess, engine: FakeEngine) -> None:
    """Two engine failures in a row (one keep-alive connection, so one worker sees both)."""
    engine.set_faults(http_error={"status": 500, "count": 2})
    with httpx.Client(timeout=10) as client:
        assert [_completion(client, router.url) for _ in range(2)] == [502, 502]
    assert wait_for(lambda: engine_view(router)[engine.url]["breaker"] == "open", 3)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_cancelled_half_open_trial_does_not_stick_the_breaker(
    fake_engine_factory: Any, matrix: MatrixRecorder, workers: int
) -> None:
    engine = fake_engine_factory()
    # Probes far apart: only the trial's own release can reopen the way, not a health probe.
    args = [*static_args([engine]), *BREAKER, "--engine-scrape-interval", "60"]
    args += ["--workers", str(workers)]
    with RouterProcess(args).start(timeout=120) as router:
        _open_breaker(router, engine)
        time.sleep(1.1)  # the cooldown: the next request is a half-open trial
        engine.set_faults(slow={"delay_ms": 5000, "count": 1})
        trial = raw_request(router.port, "/v1/completions", request_body(max_tokens=2))
        assert wait_for(lambda: engine.stats()["by_path"].get("/v1/completions", 0) >= 3, 3)
        hung_up = time.monotonic()
        trial.close()  # the trial's client hangs up before the engine answers
        statuses: list[int] = []
        for _ in range(12):  # fresh connections: with several workers, each serves some
            with httpx.Client(timeout=10) as client:
                statuses.append(_completion(client, router.url))
            time.sleep(0.1)
        recovered = time.monotonic() - hung_up
        rows = {engine_view(router)[engine.url]["breaker"] for _ in range(6)}
    matrix.add(
        MatrixRow(
            f"half-open trial's client hangs up (--workers {workers})",
            "aggregated",
            "the trial slot is released: the next requests are trials, 200, breaker closes",
            f"{Counter(statuses)}, breaker {sorted(rows)}",
            recovered,
            5.0,
        )
    )
    assert statuses == [200] * 12, statuses
    assert rows == {"closed"}, rows


def test_a_good_health_probe_closes_a_half_open_breaker(
    fake_engine_factory: Any, matrix: MatrixRecorder
) -> None:
    engine = fake_engine_factory()
    args = [*static_args([engine]), *BREAKER, "--engine-scrape-interval", "0.3"]
    with RouterProcess(args).start() as router:
        _open_breaker(router, engine)
        opened = time.monotonic()
        # No client traffic: no trial decides, so a good health probe closes the breaker one
        # cooldown after it turned half-open.
        closed = wait_for(lambda: engine_view(router)[engine.url]["breaker"] == "closed", 6)
        took = time.monotonic() - opened
        state = engine_view(router)[engine.url]["breaker"]
    matrix.add(
        MatrixRow(
            "breaker open, engine fine, no client traffic",
            "aggregated",
            "half-open after the 1 s cooldown; no trial verdict in another 1 s: a good probe "
            "closes it",
            f"breaker {state}",
            took,
            4.0,
        )
    )
    assert closed, state


def test_relabels_under_load_leave_no_phantom_in_flight(
    kube: tuple[KubeApiThread, Path], fake_engine_factory: Any, matrix: MatrixRecorder
) -> None:
    api, kubeconfig = kube
    engines = [fake_engine_factory(itl_ms=20) for _ in range(2)]
    uids = [api.add(e, "both") for e in engines]
    args = ["--service-discovery", "k8s", "--k8s-namespace", NAMESPACE]
    args += ["--k8s-label-selector", SELECTOR, "--k8s-relist-interval", "0.2"]
    args += ["--routing-logic", "least_loaded", "--engine-scrape-interval", "0.5"]
    env = {"KUBECONFIG": str(kubeconfig), "KUBERNETES_SERVICE_HOST": ""}
    with RouterProcess(args, env).start() as router:
        load = Load(router.url, 4)
        for n in range(12):  # a controller relabels one pod while streams run on it
            api.relabel(uids[0], **{"example.com/revision": str(n)})
            time.sleep(0.25)
        answers = load.stop()
        settled = wait_for(lambda: in_flight_total(router) == 0, 5)
        rows = engine_view(router)
        left = {url: row["in_flight"] for url, row in rows.items()}
        time.sleep(1.5)  # three scrapes: the engines' own running counts are idle again
        before = engines[0].stats()["by_path"].get("/v1/completions", 0)
        with httpx.Client(timeout=10) as client:  # idle again: both engines take turns
            for _ in range(6):
                client.post(router.url + "/v1/completions", json=request_body(max_tokens=2))
        after = engines[0].stats()["by_path"].get("/v1/completions", 0)
    matrix.add(
        MatrixRow(
            "pod relabelled 12 times under streaming load (k8s)",
            "k8s least_loaded",
            "same engine state kept; in-flight back to 0; the engine still gets traffic",
            f"{dict(answers)}; in-flight after {left}; relabelled engine served {after - before}/6",
            0.0,
            0.0,
        )
    )
    assert settled, left
    assert set(answers) == {"200"}, answers
    assert after - before >= 2, "least-loaded starves the relabelled engine"


def test_a_fast_failing_engine_does_not_attract_traffic(
    fake_engine_factory: Any, matrix: MatrixRecorder
) -> None:
    failing = fake_engine_factory()
    good = fake_engine_factory(itl_ms=30)
    failing.set_faults(http_error={"status": 500})
    args = [*static_args([failing, good]), "--routing-logic", "least_loaded"]
    # The breaker out of the way: this is about load scoring alone.
    args += ["--breaker-failure-threshold", "1000", "--engine-scrape-interval", "1"]
    with RouterProcess(args).start() as router:
        answers: Counter[int] = Counter()
        lock = threading.Lock()

        def client() -> None:
            with httpx.Client(timeout=10) as c:
                for _ in range(10):
                    status = _completion(c, router.url)
                    with lock:
                        answers[status] += 1

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    tried_failing = failing.stats()["by_path"].get("/v1/completions", 0)
    total = sum(answers.values())
    matrix.add(
        MatrixRow(
            "engine failing fast (500 at once), least_loaded, breaker off",
            "aggregated 2 engines",
            "recent failures count as load: the failing engine gets few first attempts",
            f"{dict(answers)}; failing engine tried {tried_failing} of {total}",
            0.0,
            0.0,
        )
    )
    assert answers == Counter({200: total})
    assert tried_failing <= total // 4, f"failing engine got {tried_failing} of {total}"


def test_a_slow_metrics_endpoint_does_not_take_an_engine_out(
    fake_engine_factory: Any, matrix: MatrixRecorder
) -> None:
    slow, other = fake_engine_factory(), fake_engine_factory()
    args = [*static_args([slow, other]), "--routing-logic", "least_loaded"]
    args += ["--engine-scrape-interval", "0.3", "--engine-scrape-timeout", "0.3"]
    args += ["--engine-metrics-timeout", "0.3", "--engine-metrics-max-age", "1"]
    args += ["--health-failure-threshold", "2"]
    with RouterProcess(args).start() as router:
        slow.set_faults(metrics_hang={})
        time.sleep(2.0)  # six scrape rounds whose /metrics probe of `slow` times out
        row = engine_view(router)[slow.url]
        before = slow.stats()["by_path"].get("/v1/completions", 0)
        with httpx.Client(timeout=10) as client:
            statuses = [_completion(client, router.url) for _ in range(6)]
        served = slow.stats()["by_path"].get("/v1/completions", 0) - before
    matrix.add(
        MatrixRow(
            "/metrics hangs past its timeout, /health and inference fine",
            "aggregated 2 engines",
            "stays in rotation; load falls back to the router's in-flight count",
            f"healthy={row['healthy']}, load={row.get('load_source')}, served {served}/6",
            0.0,
            0.0,
        )
    )
    assert row["healthy"] is True, row
    assert row["load_source"] == "router", row
    assert statuses == [200] * 6
    assert served >= 2
