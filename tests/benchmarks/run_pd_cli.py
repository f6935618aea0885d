"""Run ``run_pd.sh`` as a user would, on a tiny workload, and read back its results."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RUN_PD = ROOT / "benchmarks" / "multi-round-qa" / "run_pd.sh"
PLOT = ROOT / "benchmarks" / "multi-round-qa" / "plot.py"
ANSWER_TOKENS = 12
# Small prompts and answers keep every conversation far below the fake engine's context.
WORKLOAD = [
    "--users", "3", "--rounds", "2", "--system-prompt-tokens", "40",
    "--user-history-tokens", "10", "--question-tokens", "5",
    "--answer-tokens", str(ANSWER_TOKENS), "--ignore-eos", "--warmup-requests", "0",
    "--cooldown", "0", "--progress-interval", "0.2",
]  # fmt: skip


def run_pd(
    base_url: str,
    label: str,
    results: Path,
    *extra: str,
    env: dict[str, str] | None = None,
    workload: list[str] = WORKLOAD,
) -> subprocess.CompletedProcess[str]:
    """Run the user-facing wrapper exactly as documented, results under ``results``."""
    env = {**os.environ, "RESULTS_DIR": str(results), "PYTHON": sys.executable, **(env or {})}
    return subprocess.run(
        ["bash", str(RUN_PD), "tiny", base_url, label, *workload, *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def load(results: Path, label: str) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The run's summary.json and its per-request rows."""
    summary = json.loads((results / label / "summary.json").read_text())
    with (results / label / "requests.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    return summary, rows
