"""Results on disk (per-request CSV, per-level CSV, JSON summary) and the printed table."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from mrqa.runner import RequestRecord
from mrqa.stats import PERCENTILES, LevelSummary, SloSpec

REQUESTS_CSV = "requests.csv"
SUMMARY_CSV = "summary.csv"
SUMMARY_JSON = "summary.json"

_REQUEST_COLUMNS = [
    "qps", "index", "user_id", "round", "launch_offset_s", "ok", "reason", "http_status",
    "ttft_ms", "itl_mean_ms", "itl_max_ms", "e2e_ms", "output_tokens", "token_source",
    "content_chunks", "prompt_tokens", "meets_slo",
]  # fmt: skip


def _ms(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds * 1000.0:.3f}"


def request_row(record: RequestRecord, slo: SloSpec) -> dict[str, Any]:
    """One CSV row for one request."""
    r = record.result
    return {
        "qps": record.qps,
        "index": record.index,
        "user_id": record.user_id,
        "round": record.round,
        "launch_offset_s": f"{record.launch_offset_s:.4f}",
        "ok": int(r.ok),
        "reason": r.reason,
        "http_status": r.http_status,
        "ttft_ms": _ms(r.ttft),
        "itl_mean_ms": _ms(sum(r.gaps) / len(r.gaps)) if r.gaps else "",
        "itl_max_ms": _ms(max(r.gaps)) if r.gaps else "",
        "e2e_ms": _ms(r.e2e),
        "output_tokens": r.output_tokens if r.ok else "",
        "token_source": r.token_source if r.ok else "",
        "content_chunks": r.content_chunks,
        "prompt_tokens": "" if r.usage_prompt_tokens is None else r.usage_prompt_tokens,
        "meets_slo": int(slo.met_by(r)),
    }


def write_requests_csv(path: Path, records: list[RequestRecord], slo: SloSpec) -> None:
    """Write every measured request of the run (all levels) to ``path``."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=_REQUEST_COLUMNS)
        writer.writeheader()
        writer.writerows(request_row(record, slo) for record in records)


def summary_row(level: LevelSummary) -> dict[str, Any]:
    """A flat CSV row for one level."""
    row: dict[str, Any] = {
        "qps": level.qps,
        "launched": level.launched,
        "completed": level.completed,
        "failed": level.failed,
        "failures": ";".join(f"{k}={v}" for k, v in level.failures.items()),
        "delayed_launches": level.delayed_launches,
        "launched_qps": round(level.launched_qps, 4),
        "wall_s": round(level.wall_s, 3),
        "request_throughput": round(level.request_throughput, 4),
        "output_tokens": level.output_tokens,
        "output_tokens_per_s": round(level.output_tokens_per_s, 3),
        "goodput": round(level.goodput, 4),
        "good_requests": level.good_requests,
    }
    for name, dist in (("ttft", level.ttft_ms), ("itl", level.itl_ms), ("e2e", level.e2e_ms)):
        for key, value in dist.items():
            row[f"{name}_{key}_ms"] = "" if value is None else round(value, 3)
    return row


def write_summary(
    out_dir: Path, header: dict[str, Any], levels: list[LevelSummary]
) -> dict[str, Any]:
    """Write summary.csv and summary.json; return the JSON document."""
    rows = [summary_row(level) for level in levels]
    if rows:
        with (out_dir / SUMMARY_CSV).open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    document = {**header, "levels": [level.to_dict() for level in levels]}
    (out_dir / SUMMARY_JSON).write_text(json.dumps(document, indent=2) + "\n")
    return document


def _fmt(dist: dict[str, float | None], scale: float = 1.0) -> str:
    values = [dist.get(f"p{p}") for p in PERCENTILES]
    return "/".join("-" if v is None else f"{v / scale:.0f}" for v in values)


def format_table(label: str, levels: list[LevelSummary]) -> str:
    """A fixed-width table of the levels, then failure reasons per level."""
    head = (
        f"{'QPS':>6} {'ok':>6} {'fail':>5} {'TTFT p50/90/99 ms':>20} {'ITL p50/90/99 ms':>18} "
        f"{'E2E p50/90/99 ms':>20} {'tok/s':>8} {'req/s':>7} {'goodput':>8}"
    )
    lines = [f"multi-round QA results: {label}", head, "-" * len(head)]
    for lv in levels:
        lines.append(
            f"{lv.qps:>6g} {lv.completed:>6} {lv.failed:>5} {_fmt(lv.ttft_ms):>20} "
            f"{_fmt(lv.itl_ms):>18} {_fmt(lv.e2e_ms):>20} {lv.output_tokens_per_s:>8.1f} "
            f"{lv.request_throughput:>7.2f} {lv.goodput:>8.2f}"
        )
    for lv in levels:
        if lv.failures:
            reasons = ", ".join(f"{k}: {v}" for k, v in lv.failures.items())
            lines.append(f"failures at qps {lv.qps:g}: {reasons}")
        if lv.delayed_launches:
            lines.append(
                f"qps {lv.qps:g}: {lv.delayed_launches} launches waited for a free user "
                f"(launched {lv.launched_qps:.2f} req/s); add --users to reach the target"
            )
    return "\n".join(lines)
