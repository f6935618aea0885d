"""The fault matrix as data: each scenario's expected and observed outcome and time to answer.

The suite writes `results/faults/matrix.json`; `python -m tests.faults.report` prints it as the
Markdown table used in docs/reliability.md.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MATRIX_JSON = ROOT / "results" / "faults" / "matrix.json"


@dataclass
class MatrixRow:
    scenario: str
    mode: str  # which router: 1P1D, 2P2D, recompute, aggregated, lmcache, ...
    expected: str
    observed: str
    seconds: float  # time to answer as the client saw it
    bound: float  # the deadline-derived limit the test asserts


class MatrixRecorder:
    """Collects rows during a run; only writes when scenarios ran (a partial run keeps them)."""

    def __init__(self) -> None:
        self.rows: list[MatrixRow] = []

    def add(self, row: MatrixRow) -> None:
        self.rows.append(row)

    def write(self, path: Path = MATRIX_JSON) -> None:
        if not self.rows:
            return
        old: dict[str, dict[str, object]] = {}
        if path.exists():
            old = {r["scenario"]: r for r in json.loads(path.read_text())}
        for row in self.rows:
            old[row.scenario] = asdict(row)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(list(old.values()), indent=1) + "\n")


def markdown(path: Path = MATRIX_JSON) -> str:
    rows = json.loads(path.read_text())
    lines = [
        "| Scenario | Router | Expected | Observed | Time to answer (s) | Bound (s) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        # Rows about state over time (breaker, churn) have no single time to answer.
        seconds = f"{r['seconds']:.2f}" if r["bound"] else "-"
        bound = f"{r['bound']:.1f}" if r["bound"] else "-"
        lines.append(
            f"| {r['scenario']} | {r['mode']} | {r['expected']} | {r['observed']} "
            f"| {seconds} | {bound} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(markdown() + "\n")
