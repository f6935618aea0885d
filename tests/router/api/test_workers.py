"""--workers N: several processes on one port share one view of the engines."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.faults.stack import wait_for
from tests.harness.router_proc import RouterProcess, metric_value, static_args

pytestmark = pytest.mark.slow
IN_FLIGHT = "pdstack_router_engine_in_flight"


def test_workers_share_health_breakers_and_metrics(fake_engine_factory) -> None:  # type: ignore[no-untyped-def]
    good = fake_engine_factory(models=["tiny"])
    bad = fake_engine_factory(models=["tiny"])
    args = [
        *static_args([good, bad]),
        "--workers",
        "2",
        "--breaker-failure-threshold",
        "3",
        "--breaker-cooldown",
        "60",
        "--engine-scrape-interval",
        "60",
    ]
    with RouterProcess(args).start(timeout=120) as r:
        for _ in range(20):  # new connections land on both workers
            with httpx.Client() as c:
                assert c.get(r.url + "/ready").status_code == 200
        bad.set_faults(http_error={"status": 500})
        with httpx.Client() as one_worker:  # one keep-alive connection: one worker sees it all
            for _ in range(12):
                resp = one_worker.post(
                    r.url + "/v1/completions",
                    json={"model": "tiny", "prompt": "x", "max_tokens": 1},
                )
                assert resp.status_code == 200  # retried on the good engine
        time.sleep(0.5)  # one report/broadcast round
        seen = set()
        for _ in range(20):
            with httpx.Client() as c:
                rows = {e["url"]: e for e in c.get(r.url + "/engines").json()["engines"]}
                seen.add((rows[bad.url]["breaker"], rows[bad.url]["healthy"]))
        # every worker reports the breaker the failures opened, whichever worker saw them
        assert seen == {("open", True)}, seen
        requests_total = r.metric("pdstack_router_requests_total", outcome="ok")
        assert requests_total == 12
        assert bad.stats()["by_path"].get("/v1/completions", 0) == 3  # the breaker's threshold
        for _ in range(10):  # fresh connections: both workers serve some of these
            resp = httpx.post(r.url + "/v1/completions", json={"model": "tiny", "prompt": "y"})
            assert resp.status_code == 200
        assert r.metric("pdstack_router_requests_total", outcome="ok") == 22


def test_every_worker_shows_the_control_planes_gauges_and_probes_carry_the_key(
    fake_engine_factory,  # type: ignore[no-untyped-def]
) -> None:
    engine = fake_engine_factory(models=["tiny"], itl_ms=50)
    args = [*static_args([engine]), "--workers", "2", "--engine-scrape-interval", "0.5"]
    args += ["--engine-api-key-env", "ENGINE_KEY"]
    env = {"ENGINE_KEY": "engine-secret"}
    body = {"model": "tiny", "prompt": "x", "max_tokens": 60, "stream": True}
    with RouterProcess(args, env).start(timeout=120) as r:
        streams = []
        clients = [httpx.Client(timeout=30) for _ in range(4)]
        try:
            for c in clients:  # fresh connections: the streams spread over both workers
                s = c.stream("POST", r.url + "/v1/completions", json=body)
                s.__enter__()
                streams.append(s)
            # All four dispatched and reported (a busy machine may take a while) ...
            assert wait_for(
                lambda: metric_value(httpx.get(r.url + "/metrics").text, IN_FLIGHT) == 4, 10
            )
            seen = set()  # ... then every worker shows the same figure
            for _ in range(12):  # fresh connections: both workers answer some of these
                with httpx.Client() as c:
                    text = c.get(r.url + "/metrics").text
                seen.add(metric_value(text, IN_FLIGHT))
            scrapes = metric_value(text, "pdstack_router_engine_scrapes_total", probe="health")
        finally:
            for s in streams:
                s.__exit__(None, None, None)
            for c in clients:
                c.close()
    assert seen == {4.0}, f"in-flight gauge differs by worker: {seen}"
    assert scrapes >= 1, "the control plane's probes are not counted"
    assert set(engine.stats()["probe_auth"]) == {"Bearer engine-secret"}
