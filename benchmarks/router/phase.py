"""One load phase: start load generator processes, gather samples, summarise them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.router.procstat import tree_cpu_split
from benchmarks.router.targets import ROOT

# Python start-up plus uvloop import of the load generator processes, so they begin together.
_SPAWN_LEAD_S = 0.6


@dataclass(frozen=True)
class PhaseSpec:
    """A closed-loop load: `concurrency` streams of `max_tokens` against engines at ttft/itl."""

    name: str
    concurrency: int
    max_tokens: int
    ttft_ms: float
    itl_ms: float
    warmup: float
    duration: float


@dataclass
class PhaseResult:
    """Figures of one phase against one target (times in ms)."""

    requests: int
    errors: int
    rps: float
    tokens_per_s: float
    ttft_p50: float
    ttft_p99: float
    e2e_p50: float
    e2e_p99: float
    wall_s: float
    completed_total: int
    loadgen_cpu_s: float
    cpu_s: dict[str, float]  # CPU seconds over the whole phase, by process group
    sys_s: dict[str, float]  # of which in the kernel (stime)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


def summarise(
    samples: list[list[float]], spec: PhaseSpec, wall: float, loadgen_cpu: float
) -> dict[str, Any]:
    """Throughput counts completions inside the measured window; latencies its requests."""
    lo, hi = spec.warmup, spec.warmup + spec.duration
    window = [s for s in samples if s[0] >= lo and s[0] + s[2] <= hi]
    finished_in = [s for s in samples if lo <= s[0] + s[2] <= hi]
    ok_done = [s for s in finished_in if s[3]]
    ttfts = sorted(1000 * s[1] for s in window if s[3] and s[1] >= 0)
    e2es = sorted(1000 * s[2] for s in window if s[3])
    return {
        "requests": len(window),
        "errors": sum(1 for s in samples if not s[3]),
        "rps": len(ok_done) / spec.duration,
        "tokens_per_s": sum(s[4] for s in ok_done) / spec.duration,
        "ttft_p50": percentile(ttfts, 50),
        "ttft_p99": percentile(ttfts, 99),
        "e2e_p50": percentile(e2es, 50),
        "e2e_p99": percentile(e2es, 99),
        "wall_s": wall,
        "completed_total": sum(1 for s in samples if s[3]),
        "loadgen_cpu_s": loadgen_cpu,
    }


def run_phase(
    spec: PhaseSpec,
    urls: list[str],
    loadgen_cpus: list[int],
    procs: int,
    watch: dict[str, list[int]],
) -> PhaseResult:
    """Run the load from `procs` processes; `watch` names process trees whose CPU is measured."""
    procs = max(1, min(procs, spec.concurrency))
    start_at = time.monotonic() + _SPAWN_LEAD_S
    children = []
    for i in range(procs):
        share = spec.concurrency // procs + (1 if i < spec.concurrency % procs else 0)
        core = str(loadgen_cpus[i % len(loadgen_cpus)])
        argv = ["taskset", "-c", core, sys.executable, "-m", "benchmarks.router.loadgen"]
        for url in urls:
            argv += ["--url", url]
        argv += ["--concurrency", str(share), "--offset", str(i * share)]
        argv += ["--max-tokens", str(spec.max_tokens), "--start-at", repr(start_at)]
        argv += ["--warmup", str(spec.warmup), "--duration", str(spec.duration)]
        children.append(
            subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        )
    cpu0 = {k: _split(pids) for k, pids in watch.items()}
    outputs = [c.communicate(timeout=spec.warmup + spec.duration + 120) for c in children]
    wall = time.monotonic() - start_at
    cpu1 = {k: _split(pids) for k, pids in watch.items()}
    cpu = {k: sum(cpu1[k]) - sum(cpu0[k]) for k in watch}
    sys_s = {k: cpu1[k][1] - cpu0[k][1] for k in watch}
    samples: list[list[float]] = []
    loadgen_cpu = 0.0
    for child, (stdout, stderr) in zip(children, outputs, strict=True):
        if child.returncode != 0:
            raise RuntimeError(f"load generator failed:\n{stderr.decode()[-3000:]}")
        data = json.loads(stdout)
        samples.extend(data["samples"])
        loadgen_cpu += float(data["cpu_seconds"])
    return PhaseResult(**summarise(samples, spec, wall, loadgen_cpu), cpu_s=cpu, sys_s=sys_s)


def _split(pids: list[int]) -> tuple[float, float]:
    user = system = 0.0
    for pid in pids:
        u, s = tree_cpu_split(pid)
        user += u
        system += s
    return user, system
