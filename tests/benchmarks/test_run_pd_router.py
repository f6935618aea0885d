"""run_pd.sh through pdstack-router in PD mode (prefill + decode fake engines, real processes).

Checks what a PD user relies on: every request measured with the engine's token count, and a
failing leg reported under the router's PD reason code rather than as an anonymous error.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.benchmarks.run_pd_cli import ANSWER_TOKENS, load, run_pd
from tests.doubles.engine_proc import FakeEngine, start_fake_engine

ROUTER = Path(sys.executable).with_name("pdstack-router")
pytestmark = pytest.mark.skipif(
    not ROUTER.exists() and shutil.which("pdstack-router") is None,
    reason="pdstack-router is not installed (make setup)",
)


@pytest.fixture(scope="module")
def pd_stack() -> Iterator[tuple[str, FakeEngine, FakeEngine]]:
    """A prefill and a decode engine behind the router in disagg_prefill mode."""
    import local_stack  # benchmarks/multi-round-qa, on sys.path via conftest

    knobs: dict[str, Any] = {"models": ["tiny"], "ttft_ms": 10, "itl_ms": 1}
    with (
        start_fake_engine(**knobs, role="prefill") as prefill,
        start_fake_engine(**knobs, role="decode") as decode,
        local_stack.router(
            [prefill.url, decode.url], ["prefill", "decode"], "disagg_prefill"
        ) as base_url,
    ):
        yield base_url, prefill, decode


def test_pd_run_measures_every_request(
    pd_stack: tuple[str, FakeEngine, FakeEngine], tmp_path: Path
) -> None:
    base_url, prefill, decode = pd_stack
    done = run_pd(base_url, "pd", tmp_path, "--qps", "5,10", "--requests", "4")
    assert done.returncode == 0, done.stderr
    summary, rows = load(tmp_path, "pd")
    assert [(lv["completed"], lv["failed"]) for lv in summary["levels"]] == [(4, 0), (4, 0)]
    assert {row["output_tokens"] for row in rows} == {str(ANSWER_TOKENS)}
    # Each round really went through both legs.
    assert prefill.stats()["by_kind"].get("prefill", 0) >= 8
    assert decode.stats()["by_kind"].get("decode", 0) >= 8


@pytest.mark.parametrize(
    ("leg", "fault", "reason_code"),
    [
        ("prefill", {"http_error": {"status": 500}}, "prefill_failed"),
        ("decode", {"die_mid_stream": {"after_chunks": 2}}, "decode_failed"),
    ],
)
def test_a_failing_leg_is_counted_under_its_pd_reason(
    pd_stack: tuple[str, FakeEngine, FakeEngine],
    tmp_path: Path,
    leg: str,
    fault: dict[str, dict[str, Any]],
    reason_code: str,
) -> None:
    base_url, prefill, decode = pd_stack
    engine = prefill if leg == "prefill" else decode
    engine.set_faults(**fault)
    try:
        done = run_pd(base_url, "pd-fail", tmp_path, "--qps", "10", "--requests", "3")
    finally:
        engine.set_faults()
    summary, _ = load(tmp_path, "pd-fail")
    failures = summary["levels"][0]["failures"]
    assert done.returncode == 1 and sum(failures.values()) == 3
    assert all(reason.endswith(f":{reason_code}") for reason in failures), failures
