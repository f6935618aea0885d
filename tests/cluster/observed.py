"""What the cluster scenarios saw (pods, times, tables, counters), for people to read.

Each line goes to stdout (shown with `pytest -s`) and to results/cluster/<scenario>.md, which
the report of a run quotes. Tests assert behaviour; these notes only record it.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[2] / "results" / "cluster"


def note(scenario: str, text: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%H:%M:%S")
    with (RESULTS / f"{scenario}.md").open("a") as out:
        out.write(f"[{stamp}] {text}\n")
    print(f"[{scenario}] {text}")
