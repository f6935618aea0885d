"""Smoke test of the router overhead benchmark: it runs end to end and its JSON has the figures.

No timing asserts: the figures depend on the machine; this checks that every request through
every pdstack target succeeded and that the report carries each field a reader looks for.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.router import bench_router
from benchmarks.router.loadgen import Reply, judge
from benchmarks.router.report import histogram_quantile

PHASE_FIELDS = {"rps", "tokens_per_s", "ttft_p50", "ttft_p99", "e2e_p50", "e2e_p99", "errors"}


def test_judge_counts_stream_events_and_requires_done() -> None:
    body = b'data: {"a":1}\n\ndata: {"a":2}\n\ndata: [DONE]\n\n'
    assert judge(Reply(200, body, 1.0, True)) == (True, 2)
    assert judge(Reply(200, body[:-15], 1.0, True)) == (False, 2)
    assert judge(Reply(503, b'{"error":{}}', 1.0, True))[0] is False


def test_histogram_quantile_interpolates_within_a_bucket() -> None:
    text = "\n".join(
        [
            'h_bucket{le="0.001"} 0.0',
            'h_bucket{le="0.002"} 10.0',
            'h_bucket{le="+Inf"} 10.0',
        ]
    )
    assert histogram_quantile(text, "h", 0.5) == pytest.approx(0.0015)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_smoke_run_completes_with_all_requests_successful(tmp_path: Path) -> None:
    report = bench_router.main(["--smoke", "--no-peers", "--engines", "2", "--out", str(tmp_path)])
    names = [t["name"] for t in report["targets"]]
    assert names == ["direct", "pdstack-rr", "pdstack-rr-log", "direct-decode", "pdstack-pd"]
    for target in report["targets"]:
        for phase in ("saturation", "realistic", "light"):
            figures = target[phase]
            assert figures.keys() >= PHASE_FIELDS
            assert figures["errors"] == 0, (target["name"], phase)
            assert figures["completed_total"] > 0, (target["name"], phase)
        assert target["cpu_s_per_1k"] > 0
        assert target["rss_mb"] > 0
    pd = report["targets"][-1]
    assert pd["handoff_p50_ms"] is not None
    saved = list(tmp_path.glob("bench-router-*.json"))
    assert len(saved) == 1
    assert json.loads(saved[0].read_text())["calibration"]["engine_rps_per_core"] > 0
