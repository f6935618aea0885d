"""Turn per-target phase results into the printed table (ratios and deltas against direct)."""

from __future__ import annotations

from typing import Any


def histogram_quantile(text: str, name: str, q: float) -> float | None:
    """Quantile (seconds) of a Prometheus histogram from exposition text, linear within buckets."""
    buckets: list[tuple[float, float]] = []
    for line in text.splitlines():
        if not line.startswith(name + "_bucket"):
            continue
        head, _, value = line.rpartition(" ")
        bound = head.split('le="', 1)[1].split('"', 1)[0]
        buckets.append((float("inf") if bound == "+Inf" else float(bound), float(value)))
    buckets.sort()
    if not buckets or buckets[-1][1] == 0:
        return None
    rank = q * buckets[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return prev_le
            span = count - prev_count
            return prev_le + (le - prev_le) * ((rank - prev_count) / span if span else 0.0)
        prev_le, prev_count = le, count
    return None


def histogram_mean(text: str, name: str) -> float | None:
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith(name + "_sum"):
            total = float(line.rpartition(" ")[2])
        elif line.startswith(name + "_count"):
            count = float(line.rpartition(" ")[2])
    return total / count if count else None


def _f(value: float | None, fmt: str = "{:.0f}") -> str:
    return "-" if value is None else fmt.format(value)


def _delta(value: float, base: float | None) -> str:
    return "" if base is None else f" ({value - base:+.1f})"


def table(results: list[dict[str, Any]]) -> str:
    """One row per target; router rows compare with the direct row of the same mode."""
    direct = {r["mode"]: r for r in results if r["kind"] == "direct"}
    head = (
        f"{'target':<16} {'req/s':>7} {'x dir':>6} {'tok/s':>7} {'CPU s/1k':>8} {'/core':>6} "
        f"{'RSS MB':>7} "
        f"{'TTFT p50 (+d)':>15} {'TTFT p99 (+d)':>15} {'e2e p50 (+d)':>15} "
        f"{'e2e p99 (+d)':>15} {'1-stream e2e':>13} {'handoff':>8} {'err':>4} {'busy lg/eng':>11}"
    )
    rows = [head, "-" * len(head)]
    for r in results:
        base = direct.get(r["mode"])
        sat, real, light = r["saturation"], r["realistic"], r["light"]
        is_router = r["kind"] != "direct"
        b_sat = base["saturation"] if base and is_router else None
        b_real = base["realistic"] if base and is_router else None
        b_light = base["light"] if base and is_router else None
        b_light_e2e = b_light["e2e_p50"] if b_light else None
        ratio = sat["rps"] / b_sat["rps"] if b_sat and b_sat["rps"] else None
        errors = sat["errors"] + real["errors"] + light["errors"]
        rows.append(
            f"{r['name']:<16} {sat['rps']:>7.0f} {_f(ratio, '{:.2f}'):>6} "
            f"{sat['tokens_per_s']:>7.0f} {_f(r.get('cpu_s_per_1k'), '{:.3f}'):>8} "
            f"{_f(1000 / r['cpu_s_per_1k'] if r.get('cpu_s_per_1k') else None):>6} "
            f"{_f(r.get('rss_mb')):>7} "
            + "".join(
                f"{real[k]:>6.1f}{_delta(real[k], b_real and b_real[k]):<9}"
                for k in ("ttft_p50", "ttft_p99", "e2e_p50", "e2e_p99")
            )
            + f"{light['e2e_p50']:>5.2f}{_delta(light['e2e_p50'], b_light_e2e):<8}"
            + f" {_f(r.get('handoff_p50_ms'), '{:.3f}'):>8} {errors:>4} "
            f"{r['busy_loadgen']:>5.0%}/{r['busy_engines']:<5.0%}"
        )
    return "\n".join(rows)


LEGEND = """\
req/s, tok/s: saturation (closed loop, {sat_c} streams of {sat_t} tokens, engines answer at once);
x dir: ratio to direct to the same engines. CPU s/1k: CPU seconds per 1,000 requests of the
router process tree (for direct rows: of the engines); /core: 1000 / that, the req/s one fully
busy core would carry (robust on a shared machine, where wall-clock req/s is not).
RSS: router tree (direct: one engine).
TTFT/e2e ms: {real_c} realistic streams (TTFT {real_ttft:.0f} ms, ITL {real_itl:.0f} ms, \
{real_t} tokens);
(+d) = added vs direct. 1-stream e2e: one stream at a time, {sat_t} tokens, instant engines.
handoff: pdstack_router_pd_handoff_seconds p50, ms. busy lg/eng: share of the load generator's /
engines' cores used in the saturation phase (near 100% there means they, not the router, were
the limit)."""
