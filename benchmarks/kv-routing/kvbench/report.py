"""The benchmark's table: one row per (scenario, QPS, policy), best TTFT p99 in bold."""

from __future__ import annotations

from collections.abc import Sequence


def _ms(value: object) -> str:
    return "-" if value is None else f"{float(value):.0f}"  # type: ignore[arg-type]


def _pct(value: object) -> str:
    return "n/a" if value is None else f"{100 * float(value):.0f}%"  # type: ignore[arg-type]


def markdown_table(rows: Sequence[dict[str, object]], policies: list[str], slo_ms: float) -> str:
    head = (
        f"| scenario | QPS | policy | TTFT p50 ms | TTFT p99 ms | goodput req/s (TTFT <= "
        f"{slo_ms:g} ms) | prefill cache hit | on longest prefix | router CPU ms/req |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    order = {name: i for i, name in enumerate(policies)}
    lines = []
    groups: dict[tuple[object, object], list[dict[str, object]]] = {}
    for row in rows:
        groups.setdefault((row["scenario"], row["qps"]), []).append(row)
    for (scenario, qps), group in groups.items():
        group.sort(key=lambda r: order.get(str(r["policy"]), 99))
        best = min(float(r["ttft_p99_ms"] or 1e12) for r in group)  # type: ignore[arg-type]
        for r in group:
            p99 = _ms(r["ttft_p99_ms"])
            if r["ttft_p99_ms"] is not None and float(r["ttft_p99_ms"]) == best:  # type: ignore[arg-type]
                p99 = f"**{p99}**"
            lines.append(
                f"| {scenario} | {qps:g} | {r['policy']} | {_ms(r['ttft_p50_ms'])} | {p99} | "
                f"{float(r['goodput']):.2f} | {_pct(r['engine_hit_rate'])} | "  # type: ignore[arg-type]
                f"{_pct(r['on_longest_prefix'])} | {float(r['router_cpu_ms_per_req']):.2f} |"  # type: ignore[arg-type]
            )
    return head + "\n".join(lines) + "\n"
