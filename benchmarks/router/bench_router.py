"""Router overhead benchmark: the same load direct to fake engines and through routers.

    python -m benchmarks.router.bench_router --router-cores 1          # ~5 minutes
    python -m benchmarks.router.bench_router --quick                   # ~1 minute
    python -m benchmarks.router.bench_router --router-cores 0-3 --engine-cores 4-13 \
        --loadgen-cores 14,15 --loadgen-procs 2

Three phases per target, all closed loop over keep-alive connections:
saturation (requests/s, tokens/s, router CPU per request), realistic (64 streams against
engines with TTFT 50 ms / ITL 10 ms: added TTFT and end-to-end latency) and one stream at a
time (a latency floor, e.g. Nagle stalls, would show here). Targets: direct to the engines,
pdstack-router in roundrobin, with --log-requests, and in disagg_prefill (NIXL), plus the Rust
vllm-router from PyPI when benchmarks/router/install_peers.sh installed it. Results: a table on
stdout and JSON under results/bench-router/.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

from benchmarks.router.phase import PhaseResult, PhaseSpec, run_phase
from benchmarks.router.procstat import format_cpus, parse_cpus, tree_rss_bytes
from benchmarks.router.report import LEGEND, histogram_mean, histogram_quantile, table
from benchmarks.router.targets import (
    ROOT,
    EnginePool,
    RouterProc,
    RouterSpec,
    pdstack_specs,
    vllm_router_specs,
)

# The Rust vllm-router's measured per-core rate: engines must keep up with at least that.
_PARITY_RPS_PER_CORE = 4200


def phases(args: argparse.Namespace) -> list[PhaseSpec]:
    scale = 0.1 if args.smoke else 0.25 if args.quick else 1.0
    warm = max(0.3, 1.5 * scale)
    return [
        PhaseSpec("saturation", args.concurrency, 16, 0, 0, warm, max(0.7, 8 * scale)),
        PhaseSpec("realistic", args.streams, 64, 50, 10, max(1.0, 2 * scale), max(1.2, 10 * scale)),
        # one stream at a time: long enough to finish a few requests even on a busy machine
        PhaseSpec("light", 1, 16, 0, 0, warm, max(2.0, 3 * scale)),
    ]


def allocate_cpus(args: argparse.Namespace) -> tuple[list[int], list[int], list[int]]:
    """Router cores first; the rest is split between load generators and engines."""
    available = sorted(os.sched_getaffinity(0))
    spec = str(args.router_cores)
    router = available[: int(spec)] if spec.isdigit() else parse_cpus(spec)
    rest = [c for c in available if c not in router] or available
    if args.loadgen_cores:
        loadgen = parse_cpus(args.loadgen_cores)
    else:
        loadgen = rest[: max(1, len(rest) // 4)]
    if args.engine_cores:
        engines = parse_cpus(args.engine_cores)
    else:
        engines = [c for c in rest if c not in loadgen] or rest
    return router, engines, loadgen


def calibrate(pool: EnginePool, args: argparse.Namespace, loadgen: list[int]) -> dict[str, Any]:
    """One fake engine's capacity per core, hence how many engine cores a router core needs."""
    spec = PhaseSpec("calibration", args.concurrency, 16, 0, 0, 0.3, 1.0 if args.smoke else 2.0)
    one = pool.engines[0]
    assert one.proc is not None
    res = run_phase(spec, [one.url], loadgen, args.loadgen_procs, {"engine": [one.proc.pid]})
    per_core = res.completed_total / max(res.cpu_s["engine"], 1e-6)
    return {
        "one_engine_rps": res.rps,
        "engine_rps_per_core": per_core,
        "engine_cpu_s_per_1k": 1000 * res.cpu_s["engine"] / max(res.completed_total, 1),
        "loadgen_cpu_s_per_1k": 1000 * res.loadgen_cpu_s / max(res.completed_total, 1),
        "engine_cores_needed_for_parity": math.ceil(
            _PARITY_RPS_PER_CORE * args.router_core_count / per_core
        ),
    }


def measure(
    name: str,
    kind: str,
    mode: str,
    urls: list[str],
    pool: EnginePool,
    args: argparse.Namespace,
    cpus: dict[str, list[int]],
    router: RouterProc | None,
) -> dict[str, Any]:
    """All phases against one target; CPU of the router tree (or engines when direct)."""
    watch = {"engines": pool.pids}
    if router is not None:
        watch["router"] = [router.pid]
    out: dict[str, Any] = {"name": name, "kind": kind, "mode": mode}
    for spec in phases(args):
        pool.configure(spec.ttft_ms, spec.itl_ms)
        res: PhaseResult = run_phase(spec, urls, cpus["loadgen"], args.loadgen_procs, watch)
        out[spec.name] = res.as_dict()
        if spec.name == "saturation":
            who = "router" if router is not None else "engines"
            out["cpu_s_per_1k"] = 1000 * res.cpu_s[who] / max(res.completed_total, 1)
            pid = router.pid if router is not None else pool.pids[0]
            out["rss_mb"] = tree_rss_bytes(pid) / 2**20
            out["busy_loadgen"] = res.loadgen_cpu_s / (res.wall_s * len(cpus["loadgen"]))
            out["busy_engines"] = res.cpu_s["engines"] / (res.wall_s * len(cpus["engines"]))
        print(
            f"  {name:<16} {spec.name:<10} {res.rps:7.0f} req/s  ttft p50 {res.ttft_p50:6.2f} ms"
            f"  e2e p50 {res.e2e_p50:6.2f} ms  errors {res.errors}",
            flush=True,
        )
    if router is not None and router.spec.has_pd_metrics:
        text = router.metrics_text()
        p50 = histogram_quantile(text, "pdstack_router_pd_handoff_seconds", 0.5)
        mean = histogram_mean(text, "pdstack_router_pd_handoff_seconds")
        out["handoff_p50_ms"] = None if p50 is None else 1000 * p50
        out["handoff_mean_ms"] = None if mean is None else 1000 * mean
    return out


def run_router(
    spec: RouterSpec, pool: EnginePool, args: argparse.Namespace, cpus: dict[str, list[int]]
) -> dict[str, Any]:
    router = RouterProc(spec, cpus["router"])
    try:
        router.wait_ready()
        urls = [router.url]
        return measure(spec.name, "router", spec.mode, urls, pool, args, cpus, router)
    finally:
        router.stop()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--router-cores", default="1", help="a count (1) or a cpu list (0-3, 2,3)")
    ap.add_argument("--engine-cores", default="", help="cpu list (default: what is left)")
    ap.add_argument("--loadgen-cores", default="", help="cpu list (default: a quarter of the rest)")
    ap.add_argument("--loadgen-procs", type=int, default=0, help="default: one per loadgen core")
    ap.add_argument("--engines", type=int, default=0, help="fake engines (default: auto, even)")
    ap.add_argument("--concurrency", type=int, default=32, help="saturation streams")
    ap.add_argument("--streams", type=int, default=64, help="realistic streams")
    ap.add_argument("--targets", default="", help="comma list of target names (default: all)")
    ap.add_argument("--no-peers", action="store_true", help="skip the Rust vllm-router")
    ap.add_argument("--quick", action="store_true", help="short phases (about a minute)")
    ap.add_argument("--smoke", action="store_true", help="shortest phases (for the test)")
    ap.add_argument("--out", default=str(ROOT / "results" / "bench-router"))
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    router_cpus, engine_cpus, loadgen_cpus = allocate_cpus(args)
    args.router_core_count = len(router_cpus)
    args.loadgen_procs = args.loadgen_procs or len(loadgen_cpus)
    workers = len(router_cpus)
    n_engines = args.engines or max(4, len(engine_cpus) + len(engine_cpus) % 2)
    cpus = {"router": router_cpus, "engines": engine_cpus, "loadgen": loadgen_cpus}
    print(
        f"cpus: router {format_cpus(router_cpus)} (workers {workers}), engines "
        f"{format_cpus(engine_cpus)} ({n_engines} fake engines), load generator "
        f"{format_cpus(loadgen_cpus)} ({args.loadgen_procs} procs); load average "
        f"{os.getloadavg()[0]:.1f}",
        flush=True,
    )
    wanted = set(filter(None, args.targets.split(",")))
    pool = EnginePool(n_engines, engine_cpus)
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        calib = calibrate(pool, args, loadgen_cpus)
        print(
            f"one fake engine: {calib['engine_rps_per_core']:.0f} req/s per core "
            f"({calib['engine_cpu_s_per_1k']:.3f} CPU s/1k req); "
            f"{calib['engine_cores_needed_for_parity']} engine cores needed to keep up with "
            f"{_PARITY_RPS_PER_CORE} req/s per router core; have {len(engine_cpus)}",
            flush=True,
        )
        specs = pdstack_specs(pool, workers)
        if not args.no_peers:
            specs += vllm_router_specs(pool, workers)
        plan: list[tuple[str, str, RouterSpec | None]] = [("direct", "plain", None)]
        plan += [(s.name, s.mode, s) for s in specs if s.mode == "plain"]
        plan += [("direct-decode", "pd", None)]
        plan += [(s.name, s.mode, s) for s in specs if s.mode == "pd"]
        for name, mode, spec in plan:
            if wanted and name not in wanted:
                continue
            try:
                if spec is None:
                    urls = pool.urls("all" if mode == "plain" else "decode")
                    results.append(
                        measure(name, "direct", mode, urls, pool, args, cpus, router=None)
                    )
                else:
                    results.append(run_router(spec, pool, args, cpus))
            except RuntimeError as exc:
                print(f"  {name}: skipped: {exc}", flush=True)
    finally:
        pool.stop()
    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "processor": _cpu_model(),
            "python": platform.python_version(),
            "load_average": os.getloadavg(),
        },
        "cpus": cpus,
        "engines": n_engines,
        "workers": workers,
        "phases": [p.__dict__ for p in phases(args)],
        "calibration": calib,
        "targets": results,
        "elapsed_s": time.monotonic() - started,
    }
    sat, real = phases(args)[0], phases(args)[1]
    print()
    print(table(results))
    print(
        LEGEND.format(
            sat_c=sat.concurrency,
            sat_t=sat.max_tokens,
            real_c=real.concurrency,
            real_ttft=real.ttft_ms,
            real_itl=real.itl_ms,
            real_t=real.max_tokens,
        )
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench-router-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=1))
    print(f"results: {path}")
    return report


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
