"""`--tracing`: pdstack again with OpenTelemetry on, exporting to a real collector, same run.

Each scenario then has `pdstack` (tracing off), `pdstack-otel` (every request traced) and
`pdstack-otel10` (10 % of requests sampled); their router CPU per request, side by side, is the
cost of tracing. The collector (built by scripts/install-otelcol.sh) runs on the engine cores,
so its work is not charged to the router.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.router.procstat import set_tree_affinity
from benchmarks.router.targets import EnginePool, RouterSpec, pdstack_spec
from tests.harness.otel_collector import Collector, ensure_collector

# (target, sampler, sampler argument)
TRACED = (
    ("pdstack-otel", "parentbased_always_on", ""),
    ("pdstack-otel10", "parentbased_traceidratio", "0.1"),
)


def start_collector(cpus: list[int]) -> Collector:
    """A collector on loopback, pinned to `cpus`, writing to a temporary folder."""
    collector = Collector(ensure_collector(), Path(tempfile.mkdtemp(prefix="bench-otelcol-")))
    collector.start()
    assert collector.proc is not None
    set_tree_affinity(collector.proc.pid, cpus)
    return collector


def traced_targets(
    pool: EnginePool, collector: Collector
) -> list[tuple[str, Callable[[str, int], RouterSpec]]]:
    """(name, spec maker) of the traced pdstack targets: OTLP/gRPC to `collector`."""

    def maker(name: str, sampler: str, arg: str) -> Callable[[str, int], RouterSpec]:
        def make(mode: str, workers: int) -> RouterSpec:
            spec = pdstack_spec(pool, mode, workers)
            env = {**spec.env, "OTEL_TRACES_SAMPLER": sampler, "OTEL_SERVICE_NAME": name}
            if arg:
                env["OTEL_TRACES_SAMPLER_ARG"] = arg
            argv = [*spec.argv, "--otlp-traces-endpoint", collector.grpc_endpoint]
            return dataclasses.replace(spec, name=f"{name}-{mode}", argv=argv, env=env)

        return make

    return [(name, maker(name, sampler, arg)) for name, sampler, arg in TRACED]


def tracing_cost(rows: list[dict[str, Any]], collector: Collector) -> str:
    """Router CPU per request with tracing off and on, per scenario, and what was exported."""
    lines = ["tracing: router CPU µs per request, off -> on (every request) / on (10 % sampled)"]
    for row in rows:
        off = row.get("pdstack")
        traced = [row.get(name) for name, _, _ in TRACED]
        if off is None or traced[0] is None:
            continue
        base = off["cpu_us_per_req"]
        cells = [
            f"{t['cpu_us_per_req']:.0f} ({t['cpu_us_per_req'] / base - 1:+.0%})"
            for t in traced
            if t is not None
        ]
        lines.append(f"  {row['scenario']:<14} {row['cores']}c  {base:.0f} -> " + " / ".join(cells))
    lines.append(f"  the collector stored {len(collector.spans())} spans")
    return "\n".join(lines)
