"""run_pd.sh end to end: real processes over loopback against the fake engine (a test double).

Each run is short (a few requests per level) so the whole file takes seconds; the tests assert
what a user reads in the results (counts, token totals, failure reasons, the plot), never timings.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.benchmarks.run_pd_cli import ANSWER_TOKENS, PLOT, load, run_pd
from tests.doubles.engine_proc import FakeEngine, start_fake_engine


def generation_tokens(engine: FakeEngine) -> int:
    """Tokens the engine has streamed so far, from its vLLM-style /metrics counter."""
    pattern = r"^vllm:generation_tokens_total(?:\{[^}]*\})? ([0-9.e+]+)$"
    return int(sum(float(v) for v in re.findall(pattern, engine.metrics_text(), re.M)))


@pytest.fixture(scope="module")
def engine() -> Iterator[FakeEngine]:
    with start_fake_engine(models=["tiny"], ttft_ms=20, itl_ms=2) as fake:
        yield fake


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mrqa-results")


@dataclass
class UsageRun:
    """The main run, with what the engine saw while it ran."""

    done: subprocess.CompletedProcess[str]
    streamed_by_engine: int
    engine_stats: dict[str, Any]


@pytest.fixture(scope="module")
def usage_run(engine: FakeEngine, results: Path) -> UsageRun:
    """Two QPS levels of 6 requests each, usage requested, session header on."""
    before = generation_tokens(engine)
    done = run_pd(engine.url + "/v1", "usage", results, "--qps", "5,10", "--requests", "6",
                  "--session-header", "x-user-id")  # fmt: skip
    return UsageRun(done, generation_tokens(engine) - before, engine.stats())


def test_every_request_of_both_levels_is_counted(usage_run: UsageRun, results: Path) -> None:
    assert usage_run.done.returncode == 0, usage_run.done.stderr
    summary, rows = load(results, "usage")
    assert [lv["qps"] for lv in summary["levels"]] == [5.0, 10.0]
    for level in summary["levels"]:
        assert (level["launched"], level["completed"], level["failed"]) == (6, 6, 0)
        assert level["failures"] == {}
    assert len(rows) == 12 and all(row["ok"] == "1" for row in rows)
    # The printed table and the live progress line are what a user watches.
    assert "TTFT p50/90/99 ms" in usage_run.done.stdout
    assert "[usage qps=5]" in usage_run.done.stderr


def test_token_counts_equal_what_the_engine_streamed(usage_run: UsageRun, results: Path) -> None:
    summary, rows = load(results, "usage")
    assert {row["output_tokens"] for row in rows} == {str(ANSWER_TOKENS)}
    assert {row["token_source"] for row in rows} == {"usage"}
    assert {row["content_chunks"] for row in rows} == {str(ANSWER_TOKENS)}
    total = sum(level["output_tokens"] for level in summary["levels"])
    assert total == 12 * ANSWER_TOKENS == usage_run.streamed_by_engine


def test_session_header_and_shared_prefix_reach_the_engine(
    usage_run: UsageRun, results: Path
) -> None:
    _, rows = load(results, "usage")
    seen = {entry["headers"].get("x-user-id") for entry in usage_run.engine_stats["recent"]}
    assert {row["user_id"] for row in rows} <= seen
    # Every user's prompt starts with the shared system prompt, so the engine reuses it.
    assert usage_run.engine_stats["prefix_cache_hits"] > 0


@pytest.fixture(scope="module")
def chunks_run(engine: FakeEngine, results: Path) -> subprocess.CompletedProcess[str]:
    """The same engine without stream usage: tokens must come from the chunks."""
    return run_pd(engine.url + "/v1", "chunks", results, "--qps", "5,10", "--requests", "3",
                  "--no-usage")  # fmt: skip


def test_without_usage_tokens_are_counted_from_chunks(
    chunks_run: subprocess.CompletedProcess[str], results: Path
) -> None:
    assert chunks_run.returncode == 0, chunks_run.stderr
    summary, rows = load(results, "chunks")
    assert {row["token_source"] for row in rows} == {"chunks"}
    assert {row["output_tokens"] for row in rows} == {str(ANSWER_TOKENS)}
    assert [lv["token_sources"] for lv in summary["levels"]] == [{"chunks": 3}] * 2


def test_options_come_from_the_environment_too(engine: FakeEngine, results: Path) -> None:
    env = {"QPS": "4,8", "REQUESTS": "2", "ANSWER_LEN": "5", "NUM_USERS": "2",
           "NUM_ROUNDS": "2", "SYSTEM_PROMPT": "20", "USER_HISTORY": "5", "QUESTION_LEN": "5",
           "WARMUP": "0"}  # fmt: skip
    done = run_pd(engine.url + "/v1", "env", results, "--cooldown", "0", env=env, workload=[])
    assert done.returncode == 0, done.stderr
    summary, rows = load(results, "env")
    assert [(lv["qps"], lv["completed"]) for lv in summary["levels"]] == [(4.0, 2), (8.0, 2)]
    assert summary["config"]["users"] == 2
    assert {row["output_tokens"] for row in rows} == {"5"}


@pytest.fixture
def faulty(engine: FakeEngine) -> Iterator[FakeEngine]:
    """The module's engine, with whatever faults a test injects cleared afterwards."""
    yield engine
    engine.set_faults()


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("http_error;status=503", "http_503"),
        ("die_mid_stream;after_chunks=3", "disconnected"),
        ("truncated_stream;after_chunks=3", "incomplete_stream"),
        ("stall_mid_stream;after_chunks=3", "timeout"),
        ("invalid_json", "bad_chunk"),
    ],
)
def test_a_failing_engine_is_counted_by_reason(
    fault: str, reason: str, faulty: FakeEngine, results: Path
) -> None:
    faulty.admin_config(faults=fault)
    done = run_pd(faulty.url + "/v1", f"fault-{reason}", results, "--qps", "10",
                  "--requests", "4", "--request-timeout", "1")  # fmt: skip
    assert done.returncode == 1  # not one request succeeded: the run says so
    summary, rows = load(results, f"fault-{reason}")
    level = summary["levels"][0]
    assert (level["launched"], level["completed"], level["failed"]) == (4, 0, 4)
    assert level["failures"] == {reason: 4}
    assert {row["reason"] for row in rows} == {reason}
    assert f"failures at qps 10: {reason}: 4" in done.stdout


def test_some_failures_leave_the_rest_measured(faulty: FakeEngine, results: Path) -> None:
    faulty.set_faults(http_error={"status": 503, "count": 3})
    done = run_pd(faulty.url + "/v1", "flaky", results, "--qps", "10,10", "--requests", "5")
    assert done.returncode == 0, done.stderr
    summary, _ = load(results, "flaky")
    first, second = summary["levels"]
    assert (first["completed"], first["failures"]) == (2, {"http_503": 3})
    assert (second["completed"], second["failed"]) == (5, 0)


def test_prompts_the_model_cannot_take_stop_the_run_with_the_engines_message(
    results: Path,
) -> None:
    """The default workload (a 1,000-word system prompt) against a 1,024-token model: every
    request fails alike, so the run stops after the first few and says what the engine said,
    instead of sending three levels of doomed requests."""
    with start_fake_engine(models=["tiny"], max_model_len=1024) as small:
        done = run_pd(small.url + "/v1", "too-long", results, workload=[])
        seen = small.stats()["by_path"]
    assert done.returncode == 1
    assert "the first 5 requests all failed, stopping early (http_400" in done.stderr
    assert "maximum context length is 1024 tokens" in done.stderr
    summary = json.loads((results / "too-long" / "summary.json").read_text())
    assert "maximum context length is 1024 tokens" in summary["stopped_early"]
    # Two warm-ups and three measured requests of the first level; no further level ran.
    assert [level["launched"] for level in summary["levels"]] == [3]
    assert seen == {"/v1/chat/completions": 5}


def test_unreachable_endpoint_is_a_connect_error(results: Path) -> None:
    with socket.socket() as sock:  # a port that was just free, so nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = run_pd(f"http://127.0.0.1:{port}/v1", "down", results, "--qps", "10", "--requests", "2")
    assert done.returncode == 1
    summary, _ = load(results, "down")
    assert summary["levels"][0]["failures"] == {"connect_error": 2}


def test_plot_compares_runs_in_one_png(
    usage_run: UsageRun,
    chunks_run: subprocess.CompletedProcess[str],
    results: Path,
    tmp_path: Path,
) -> None:
    assert usage_run.done.returncode == 0 and chunks_run.returncode == 0
    out = tmp_path / "compare.png"
    done = subprocess.run(
        [sys.executable, str(PLOT), str(results / "usage"), str(results / "chunks"),
         "-o", str(out)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
