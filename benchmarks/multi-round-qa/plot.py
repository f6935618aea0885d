#!/usr/bin/env python3
"""Plot TTFT and ITL percentiles (and throughput/goodput) against QPS for one or more runs.

    plot.py results/multi-round-qa/pd results/multi-round-qa/agg -o compare.png

Each argument is a results directory (or its summary.json); each run becomes one colour,
each percentile one line style, so a PD run and an aggregated run compare on one chart.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt

STYLES = {"p50": "-", "p90": "--", "p99": ":"}
MARKERS = {"p50": "o", "p90": "s", "p99": "^"}


def load_run(path: Path) -> dict[str, Any]:
    """Read a run's summary.json from a results directory or the file itself."""
    file = path / "summary.json" if path.is_dir() else path
    if not file.is_file():
        raise SystemExit(f"plot.py: no summary.json in {path}")
    run: dict[str, Any] = json.loads(file.read_text())
    return run


def _series(levels: list[dict[str, Any]], metric: str, pct: str) -> tuple[list[float], list[float]]:
    """QPS and the metric's percentile, skipping levels without a value (all failed)."""
    points = [(lv["qps"], lv[metric].get(pct)) for lv in levels]
    kept = [(q, v) for q, v in points if v is not None]
    return [q for q, _ in kept], [v for _, v in kept]


def plot_runs(runs: list[dict[str, Any]], labels: list[str], output: Path, log_y: bool) -> None:
    """Draw TTFT, ITL and throughput panels for ``runs`` into ``output`` (PNG)."""
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    panels = (("ttft_ms", "TTFT (ms)"), ("itl_ms", "ITL (ms)"))
    for index, (run, label) in enumerate(zip(runs, labels, strict=True)):
        color = colors[index % len(colors)]
        levels = sorted(run["levels"], key=lambda lv: lv["qps"])
        for ax, (metric, _) in zip(axes, panels, strict=False):
            for pct, style in STYLES.items():
                xs, ys = _series(levels, metric, pct)
                ax.plot(xs, ys, style, marker=MARKERS[pct], color=color, label=f"{label} {pct}")
        qps = [lv["qps"] for lv in levels]
        axes[2].plot(qps, [lv["request_throughput"] for lv in levels], "-", marker="o",
                     color=color, label=f"{label} completed")  # fmt: skip
        # Hollow markers: goodput often equals throughput and would hide its line.
        axes[2].plot(qps, [lv["goodput"] for lv in levels], "--", marker="s", color=color,
                     markerfacecolor="none", markersize=9, label=f"{label} goodput")  # fmt: skip
    for ax, (_, title) in zip(axes, panels, strict=False):
        ax.set_title(f"{title} p50 / p90 / p99 vs QPS")
        ax.set_ylabel(title)
        if log_y:
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)  # from zero, so small differences don't look dramatic
    axes[2].set_title("Requests/s: completed and goodput (within SLO)")
    axes[2].set_ylabel("requests/s")
    all_qps = sorted({lv["qps"] for run in runs for lv in run["levels"]})
    axes[2].set_ylim(bottom=0)
    for ax in axes:
        ax.set_xticks(all_qps)
        ax.set_xlabel("target QPS")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    first = runs[0]
    fig.suptitle(f"multi-round QA: {first.get('model', '?')} — {', '.join(labels)}")
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, load runs, write the PNG."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="results dirs or summary.json files")
    parser.add_argument("-o", "--output", type=Path, default=Path("multi-round-qa.png"))
    parser.add_argument("--labels", help="comma-separated names overriding each run's label")
    parser.add_argument("--log-y", action="store_true", help="logarithmic latency axes")
    args = parser.parse_args(argv)
    runs = [load_run(path) for path in args.runs]
    labels = [str(run.get("label", path.name)) for run, path in zip(runs, args.runs, strict=True)]
    if args.labels:
        labels = args.labels.split(",")
        if len(labels) != len(runs):
            parser.error("--labels needs one name per run")
    plot_runs(runs, labels, args.output, args.log_y)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
