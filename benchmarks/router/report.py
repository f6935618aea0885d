"""Turn per-target phase results into the printed table (ratios and deltas against direct)."""

from __future__ import annotations

from typing import Any

Buckets = list[tuple[float, float]]


def histogram_buckets(text: str, name: str) -> Buckets:
    """Cumulative (upper bound, count) pairs of a Prometheus histogram, summed over labels."""
    counts: dict[float, float] = {}
    for line in text.splitlines():
        if not line.startswith(name + "_bucket"):
            continue
        head, _, value = line.rpartition(" ")
        bound = head.split('le="', 1)[1].split('"', 1)[0]
        le = float("inf") if bound == "+Inf" else float(bound)
        counts[le] = counts.get(le, 0.0) + float(value)
    return sorted(counts.items())


def bucket_delta(after: Buckets, before: Buckets) -> Buckets:
    """What a histogram gained between two scrapes (one scenario of a long-lived router)."""
    old = dict(before)
    return [(le, count - old.get(le, 0.0)) for le, count in after]


def bucket_quantile(buckets: Buckets, q: float) -> float | None:
    """Quantile from cumulative buckets, linear within a bucket (as Prometheus does)."""
    if not buckets or buckets[-1][1] <= 0:
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


def histogram_quantile(text: str, name: str, q: float) -> float | None:
    """Quantile (seconds) of a Prometheus histogram from exposition text."""
    return bucket_quantile(histogram_buckets(text, name), q)


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


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or not b else f"{a / b:.2f}"


def _added(r: dict[str, Any] | None, key: str) -> float | None:
    return None if r is None else r.get(key)


COLUMNS = (
    "| scenario | router cores | c | direct req/s | target | req/s | CPU µs/req | req/s per core "
    "| added TTFT p50 / p99 ms | added e2e p50 ms | errors | hand-off p50 ms | RSS MB |"
)


def markdown(rows: list[dict[str, Any]]) -> str:
    """One line per scenario and router, then ratio lines pdstack / pdstack-base and pdstack /
    Rust where both ran."""
    out = [COLUMNS, "|---" * (COLUMNS.count("|") - 1) + "|"]
    for row in rows:
        for name in ("vllm-router", "pdstack-base", "pdstack"):
            r = row.get(name)
            if r is None:
                continue
            cpu = r.get("cpu_us_per_req")
            out.append(
                f"| {row['scenario']} | {row['cores']} | {row['concurrency']} "
                f"| {_f(row.get('direct_rps'))} | {name} | {r['rps']:.0f} | {_f(cpu)} "
                f"| {_f(1e6 / cpu if cpu else None)} "
                f"| {_f(_added(r, 'added_ttft_p50'), '{:+.1f}')} / "
                f"{_f(_added(r, 'added_ttft_p99'), '{:+.1f}')} "
                f"| {_f(_added(r, 'added_e2e_p50'), '{:+.1f}')} | {r['errors']} "
                f"| {_f(r.get('handoff_p50_ms'), '{:.3f}')} | {_f(r.get('rss_mb'))} |"
            )
        ours = row.get("pdstack")
        for other, label in (("pdstack-base", "pdstack-base"), ("vllm-router", "Rust")):
            theirs = row.get(other)
            if ours and theirs:
                out.append(
                    f"| {row['scenario']} | {row['cores']} | {row['concurrency']} | | "
                    f"**pdstack / {label}** | {_ratio(ours['rps'], theirs['rps'])} "
                    f"| {_ratio(ours.get('cpu_us_per_req'), theirs.get('cpu_us_per_req'))} "
                    f"| | | | | | |"
                )
    return "\n".join(out)


LEGEND = """\
req/s: completed streams per second (closed loop, c streams). CPU µs/req: CPU time of the
router's whole process tree per completed request; req/s per core = 1e6 / that (what one fully
busy core would carry). added TTFT/e2e: router minus direct to the same engines at the same
load (PD: direct to the decode half answering plain requests, so PD adds its prefill round trip
and the engines' kv_ms). hand-off: pdstack_router_pd_handoff_seconds p50 over the scenario.
RSS: router tree at the end of the scenario. Ratios: pdstack / Rust (CPU: below 1 is better)."""
