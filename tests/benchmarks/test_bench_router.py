"""Smoke test of the router overhead benchmark: it runs end to end and its JSON has the figures.

No timing asserts: the figures depend on the machine; this checks that every request through
every pdstack target succeeded and that the report carries each field a reader looks for.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchmarks.router import bench_router
from benchmarks.router.loadgen import Reply, judge
from benchmarks.router.report import bucket_delta, bucket_quantile, histogram_quantile

PHASE_FIELDS = {"rps", "ttft_p50", "ttft_p99", "e2e_p50", "e2e_p99", "errors", "completed"}


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


def test_bucket_delta_isolates_one_scenario_of_a_long_lived_router() -> None:
    before = [(0.001, 100.0), (0.002, 100.0), (float("inf"), 100.0)]
    after = [(0.001, 100.0), (0.002, 110.0), (float("inf"), 110.0)]
    # all ten new observations fell in (1 ms, 2 ms]: the old ones must not pull the median down
    assert bucket_quantile(bucket_delta(after, before), 0.5) == pytest.approx(0.0015)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_smoke_run_completes_with_all_requests_successful(tmp_path: Path) -> None:
    report = bench_router.main(["--smoke", "--no-peers", "--out", str(tmp_path)])
    names = [(r["scenario"], r["cores"]) for r in report["rows"]]
    assert names == [("plain-tiny", 1), ("realistic", 1), ("pd-tiny", 1)]
    for row in report["rows"]:
        assert row["direct"].keys() >= PHASE_FIELDS
        ours = row["pdstack"]
        assert ours.keys() >= PHASE_FIELDS | {"cpu_us_per_req", "rss_mb", "added_ttft_p50"}
        assert ours["errors"] == 0, row["scenario"]
        assert ours["completed"] > 0, row["scenario"]
        assert ours["cpu_us_per_req"] > 0
        # the fast engines saw only routes they serve, and every decode carried the KV params
        assert ours["engine_not_found"] == 0
        assert ours["engine_bad_decode"] == 0
    assert report["rows"][-1]["pdstack"]["handoff_p50_ms"] is not None
    assert report["calibration"]["engine_rps_per_core"] > 0
    assert len(list(tmp_path.glob("bench-router-*.json"))) == 1
    table = next(tmp_path.glob("bench-router-*.md")).read_text()
    assert "| pd-tiny | 1 | 64 |" in table
    saved = json.loads(next(tmp_path.glob("bench-router-*.json")).read_text())
    assert saved["rows"] == report["rows"]


@pytest.mark.slow
@pytest.mark.tracing
@pytest.mark.timeout(300)
def test_tracing_runs_pdstack_traced_in_the_same_run_and_reports_the_cost(tmp_path: Path) -> None:
    argv = ["--smoke", "--no-peers", "--tracing", "--scenarios", "pd-tiny", "--out", str(tmp_path)]
    report = bench_router.main(argv)
    (row,) = report["rows"]
    for target in ("pdstack", "pdstack-otel", "pdstack-otel10"):
        assert row[target]["errors"] == 0, target
        assert row[target]["engine_bad_decode"] == 0, target
    cost = report["tracing_cost"]
    assert f"{row['pdstack']['cpu_us_per_req']:.0f} -> " in cost
    stored = int(cost.rsplit("stored ", 1)[1].split()[0])
    assert stored > 0  # the traced routers really exported to the collector


def test_baseline_runs_an_earlier_router_tree_as_a_third_target(tmp_path: Path) -> None:
    # A copy of this checkout's router stands in for an earlier commit's `git archive`; the
    # marker proves the baseline process imported the copy, not the installed package.
    base = tmp_path / "base"
    shutil.copytree(Path(bench_router.ROOT) / "router" / "src" / "pdrouter", base / "pdrouter")
    marker = tmp_path / "imported"
    init = base / "pdrouter" / "__init__.py"
    init.write_text(init.read_text() + f"\nopen({str(marker)!r}, 'w').close()\n")
    argv = ["--smoke", "--no-peers", "--scenarios", "pd-tiny", "--baseline", str(base)]
    report = bench_router.main([*argv, "--out", str(tmp_path / "out")])
    (row,) = report["rows"]
    for target in ("pdstack-base", "pdstack"):
        assert row[target]["errors"] == 0 and row[target]["engine_bad_decode"] == 0, target
    assert marker.exists()
    table = next((tmp_path / "out").glob("bench-router-*.md")).read_text()
    assert "| pd-tiny | 1 | 64 | | **pdstack / pdstack-base** |" in table


def test_baseline_without_a_router_tree_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        bench_router.main(["--smoke", "--baseline", str(tmp_path), "--out", str(tmp_path)])
    assert "no pdrouter/cli.py there" in capsys.readouterr().err
