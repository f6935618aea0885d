"""--workers N: several processes on one port share one view of the engines."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.harness.router_proc import RouterProcess, static_args

pytestmark = pytest.mark.slow


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
