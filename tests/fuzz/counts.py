"""How many cases the fuzz tests generated, written to results/fuzz/counts.json for the docs."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COUNTS_JSON = ROOT / "results" / "fuzz" / "counts.json"


class CaseCounts:
    """Counts per test and per outcome (e.g. ``router_fuzz/400``); merged into the JSON file."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, test: str, outcome: str | int) -> None:
        self.counts[f"{test}/{outcome}"] += 1
        self.counts[f"{test}/total"] += 1

    def write(self, path: Path = COUNTS_JSON) -> None:
        if not self.counts:
            return
        old: dict[str, int] = json.loads(path.read_text()) if path.exists() else {}
        tests = {key.split("/")[0] for key in self.counts}
        merged = {k: v for k, v in old.items() if k.split("/")[0] not in tests}
        merged.update(self.counts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dict(sorted(merged.items())), indent=1) + "\n")
