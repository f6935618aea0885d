"""Router overhead benchmark: the same loads direct to fast fake engines and through routers.

    python -m benchmarks.router.bench_router            # 16 cores: 1- and 4-core table, ~5 min
    python -m benchmarks.router.bench_router --quick    # a 2-core machine: 1-core rows, ~2 min

Scenarios (benchmarks/router/scenarios.py): plain tiny streams, one stream at a time, realistic
streams (TTFT 50 ms, ITL 10 ms, 64 tokens) at c=64 and c=512, PD tiny and PD realistic, on one
router core, and plain / realistic / PD on four (`--workers 4`). Targets: pdstack-router and the
Rust vllm-router 0.1.17 (benchmarks/router/install_peers.sh, or $VLLM_ROUTER_BIN) in the same
run, neither logging per request, each compared with the engines answering directly. Results:
a table on stdout, Markdown and JSON under --out; `--profile realistic` adds a py-spy flame
graph of pdstack in that 1-core scenario (an extra, unmeasured phase); `--tracing` runs pdstack
again with OpenTelemetry tracing on, exporting to a real collector (tracing_targets.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks.router.phase import PhaseResult, PhaseSpec, run_phase
from benchmarks.router.procstat import format_cpus, parse_cpus, tree_rss_bytes
from benchmarks.router.report import (
    LEGEND,
    bucket_delta,
    bucket_quantile,
    histogram_buckets,
    markdown,
)
from benchmarks.router.scenarios import CpuLayout, Scenario, layout, scenarios
from benchmarks.router.targets import (
    ROOT,
    EnginePool,
    RouterProc,
    RouterSpec,
    pdstack_spec,
    vllm_router_binary,
    vllm_router_spec,
)
from benchmarks.router.tracing_targets import start_collector, traced_targets, tracing_cost
from tests.harness.otel_collector import Collector

_HANDOFF = "pdstack_router_pd_handoff_seconds"


def _length(args: argparse.Namespace) -> str:
    return "smoke" if args.smoke else "quick" if args.quick else "full"


def _run(
    s: Scenario, urls: list[str], lay: CpuLayout, watch: dict[str, list[int]], length: str
) -> PhaseResult:
    spec: PhaseSpec = s.phase(length)
    return run_phase(spec, urls, lay.loadgen, len(lay.loadgen), watch)


def calibrate(pool: EnginePool, lay: CpuLayout, length: str) -> dict[str, Any]:
    """One engine alone under the plain tiny load: its req/s per core, and the load generator's."""
    probe = Scenario("calibration", 1, "plain", 32, 16)
    res = _run(probe, pool.urls()[:1], lay, {"engine": pool.pids[:1]}, length)
    done = max(res.completed_total, 1)
    return {
        "one_engine_rps": res.rps,
        "engine_rps_per_core": done / max(res.cpu_s["engine"], 1e-6),
        "loadgen_rps_per_core": done / max(res.loadgen_cpu_s, 1e-6),
        "errors": res.errors,
    }


def figures(res: PhaseResult, lay: CpuLayout, who: str | None) -> dict[str, Any]:
    """What the table reports for one phase (router CPU when `who` names the router)."""
    done = max(res.completed_total, 1)
    out: dict[str, Any] = {
        "rps": res.rps,
        "errors": res.errors,
        "ttft_p50": res.ttft_p50,
        "ttft_p99": res.ttft_p99,
        "e2e_p50": res.e2e_p50,
        "e2e_p99": res.e2e_p99,
        "completed": res.completed_total,
        "busy_engines": res.cpu_s["engines"] / (res.wall_s * len(lay.engines)),
        "busy_loadgen": res.loadgen_cpu_s / (res.wall_s * len(lay.loadgen)),
        "engine_cpu_us_per_req": 1e6 * res.cpu_s["engines"] / done,
        "loadgen_cpu_us_per_req": 1e6 * res.loadgen_cpu_s / done,
    }
    if who is not None:
        out["cpu_us_per_req"] = 1e6 * res.cpu_s[who] / done
        out["sys_us_per_req"] = 1e6 * res.sys_s[who] / done  # of which in the kernel
    return out


def _added(fig: dict[str, Any], base: dict[str, Any]) -> None:
    for key in ("ttft_p50", "ttft_p99", "e2e_p50"):
        fig["added_" + key] = fig[key] - base[key]


def _print(target: str, s: Scenario, fig: dict[str, Any]) -> None:
    cpu = fig.get("cpu_us_per_req")
    busy = f"eng {fig['busy_engines']:.0%} lg {fig['busy_loadgen']:.0%}"
    print(
        f"  {target:<12} {s.name:<14} {s.cores}c c={s.concurrency:<4} {fig['rps']:7.0f} req/s"
        + (f"  {cpu:6.0f} µs/req" if cpu is not None else "  (engines)      ")
        + (f" (sys {fig['sys_us_per_req']:4.0f})" if cpu is not None else "           ")
        + f"  ttft p50 {fig['ttft_p50']:6.1f} p99 {fig['ttft_p99']:6.1f} ms"
        + f"  errors {fig['errors']}  busy {busy}",
        flush=True,
    )


def profile(router: RouterProc, s: Scenario, lay: CpuLayout, args: argparse.Namespace) -> str:
    """py-spy flame graph of the router during one more phase of `s` (not measured)."""
    spec = s.phase(_length(args))
    out = Path(args.out) / f"profile-{s.name}-{s.cores}c.svg"
    seconds = max(2, int(spec.warmup + spec.duration) - 1)
    argv = [args.py_spy, "record", "--pid", str(router.pid), "--rate", "200", "--nonblocking"]
    argv += ["--duration", str(seconds), "--format", "flamegraph", "--output", str(out)]
    if s.cores > 1:
        argv.append("--subprocesses")
    spy = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    run_phase(spec, [router.url], lay.loadgen, len(lay.loadgen), {})
    text = spy.communicate(timeout=60)[0].decode(errors="replace")
    if spy.returncode != 0:
        print(f"  py-spy failed: {text[-500:]}", flush=True)
        return ""
    print(f"  profile: {out}", flush=True)
    return str(out)


def run_target(
    name: str,
    make_spec: Any,
    groups: dict[tuple[int, str], list[Scenario]],
    pool: EnginePool,
    lay: CpuLayout,
    args: argparse.Namespace,
    rows: dict[tuple[str, int], dict[str, Any]],
) -> None:
    """Start the router once per (cores, mode) and run that group's scenarios through it."""
    for (cores, mode), group in groups.items():
        spec: RouterSpec = make_spec(mode, cores)
        router = RouterProc(spec, lay.router_cores(cores))
        try:
            router.wait_ready()
            for s in group:
                pool.configure(s.ttft_ms, s.itl_ms, s.kv_ms)
                before = (
                    histogram_buckets(router.metrics_text(), _HANDOFF)
                    if spec.has_pd_metrics
                    else []
                )
                engines0 = pool.stats()
                watch = {"router": [router.pid], "engines": pool.pids}
                res = _run(s, [router.url], lay, watch, _length(args))
                fig = figures(res, lay, "router")
                fig["rss_mb"] = tree_rss_bytes(router.pid) / 2**20
                engines1 = pool.stats()
                for key in ("bad_decode", "not_found"):
                    fig["engine_" + key] = engines1.get(key, 0) - engines0.get(key, 0)
                if spec.has_pd_metrics:
                    after = histogram_buckets(router.metrics_text(), _HANDOFF)
                    p50 = bucket_quantile(bucket_delta(after, before), 0.5)
                    fig["handoff_p50_ms"] = None if p50 is None else 1000 * p50
                row = rows[(s.name, s.cores)]
                _added(fig, row["direct"])
                row[name] = fig
                _print(name, s, fig)
                if name == "pdstack" and s.cores == 1 and s.name in args.profile and args.py_spy:
                    pool.configure(s.ttft_ms, s.itl_ms, s.kv_ms)
                    row["profile"] = profile(router, s, lay, args)
        except RuntimeError as exc:
            print(f"  {name} {mode} {cores}c: skipped: {exc}", flush=True)
        finally:
            router.stop()


def baseline_maker(pool: EnginePool, src: str) -> Any:
    """Spec maker for pdstack-base: the same command with `src` first on PYTHONPATH."""
    folder = str(Path(src).resolve())

    def make(mode: str, workers: int) -> RouterSpec:
        spec = pdstack_spec(pool, mode, workers)
        path = os.pathsep.join(p for p in (folder, os.environ.get("PYTHONPATH", "")) if p)
        env = {**spec.env, "PYTHONPATH": path}
        return dataclasses.replace(spec, name=f"pdstack-base-{mode}", env=env)

    return make


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--router-cores", type=int, default=4, help="most router cores (1 or 4)")
    ap.add_argument("--router-cpus", default="", help="cpu list for routers (default: the first)")
    ap.add_argument("--engine-cores", default="", help="cpu list (default: see scenarios.py)")
    ap.add_argument("--loadgen-cores", default="", help="cpu list (default: see scenarios.py)")
    ap.add_argument("--engines", type=int, default=0, help="fast engines (default: one a core)")
    ap.add_argument("--scenarios", default="", help="comma list of scenario names (default: all)")
    ap.add_argument("--no-peers", action="store_true", help="skip the Rust vllm-router")
    ap.add_argument("--tracing", action="store_true", help="also pdstack with tracing on")
    ap.add_argument(
        "--baseline",
        default="",
        help="a router source folder (holding pdrouter/, e.g. from `git archive REV router/src`) "
        "to run as pdstack-base in the same run: before/after ratios of a change",
    )
    ap.add_argument("--profile", default="", help="comma list of 1-core scenarios to profile")
    ap.add_argument("--py-spy", default=shutil.which("py-spy") or "", help="py-spy binary")
    ap.add_argument("--quick", action="store_true", help="short phases for a 2-core machine")
    ap.add_argument("--smoke", action="store_true", help="shortest phases (for the test)")
    ap.add_argument("--out", default=str(ROOT / "results" / "bench-router"))
    args = ap.parse_args(argv)
    args.profile = [p for p in args.profile.split(",") if p]
    if args.baseline and not (Path(args.baseline) / "pdrouter" / "cli.py").exists():
        ap.error(f"--baseline {args.baseline}: no pdrouter/cli.py there")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    length = _length(args)
    lay = layout(
        args.router_cores,
        parse_cpus(args.engine_cores),
        parse_cpus(args.loadgen_cores),
        parse_cpus(args.router_cpus),
    )
    wanted = set(filter(None, args.scenarios.split(",")))
    plan = [s for s in scenarios(length, len(lay.router)) if not wanted or s.name in wanted]
    n_engines = args.engines or max(2, len(lay.engines) + len(lay.engines) % 2)
    print(
        f"cpus: router {format_cpus(lay.router)}, engines {format_cpus(lay.engines)} "
        f"({n_engines} fast fake engines), load generators {format_cpus(lay.loadgen)}; "
        f"load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    started = time.monotonic()
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    pool = EnginePool(n_engines, lay.engines)
    collector: Collector | None = None
    tracing = ""
    try:
        if args.tracing:
            collector = start_collector(lay.engines)
        calib = calibrate(pool, lay, length)
        print(
            f"one fast engine: {calib['engine_rps_per_core']:.0f} tiny streams/s per core; "
            f"load generator: {calib['loadgen_rps_per_core']:.0f} per core",
            flush=True,
        )
        directs: dict[tuple[Any, ...], dict[str, Any]] = {}
        for s in plan:
            if s.direct_key not in directs:
                pool.configure(s.ttft_ms, s.itl_ms, 0.0)
                urls = pool.urls("all" if s.mode == "plain" else "decode")
                res = _run(s, urls, lay, {"engines": pool.pids}, length)
                directs[s.direct_key] = figures(res, lay, None)
                _print("direct", s, directs[s.direct_key])
            rows[(s.name, s.cores)] = {
                "scenario": s.name,
                "cores": s.cores,
                "mode": s.mode,
                "concurrency": s.concurrency,
                "max_tokens": s.max_tokens,
                "ttft_ms": s.ttft_ms,
                "itl_ms": s.itl_ms,
                "kv_ms": s.kv_ms,
                "direct": directs[s.direct_key],
                "direct_rps": directs[s.direct_key]["rps"],
            }
        groups: dict[tuple[int, str], list[Scenario]] = {}
        for s in plan:
            groups.setdefault((s.cores, s.mode), []).append(s)
        if args.baseline:
            run_target(
                "pdstack-base", baseline_maker(pool, args.baseline), groups, pool, lay, args, rows
            )
        run_target("pdstack", lambda m, c: pdstack_spec(pool, m, c), groups, pool, lay, args, rows)
        if collector is not None:
            for name, make in traced_targets(pool, collector):
                run_target(name, make, groups, pool, lay, args, rows)
        binary = vllm_router_binary()
        if binary is not None and not args.no_peers:
            run_target(
                "vllm-router",
                lambda m, c: vllm_router_spec(pool, m, binary),
                groups,
                pool,
                lay,
                args,
                rows,
            )
        elif not args.no_peers:
            print("vllm-router not installed (benchmarks/router/install_peers.sh)", flush=True)
    finally:
        pool.stop()
        if collector is not None:
            tracing = tracing_cost(list(rows.values()), collector)
            collector.stop()
            shutil.rmtree(collector.folder, ignore_errors=True)  # tens of MB of spans
    table = markdown(list(rows.values()))
    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "processor": _cpu_model(),
            "python": platform.python_version(),
            "load_average": os.getloadavg(),
        },
        "cpus": {"router": lay.router, "engines": lay.engines, "loadgen": lay.loadgen},
        "engines": n_engines,
        "length": length,
        "calibration": calib,
        "rows": list(rows.values()),
        "tracing_cost": tracing,
        "elapsed_s": time.monotonic() - started,
    }
    print()
    print(table)
    print(LEGEND)
    if tracing:
        print(tracing)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"bench-router-{stamp}.json").write_text(json.dumps(report, indent=1))
    (out / f"bench-router-{stamp}.md").write_text(
        f"{_cpu_model()}, {os.cpu_count()} cpus, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f}, {length} run of {report['elapsed_s']:.0f} s\n\n"
        f"{table}\n\n{LEGEND}\n"
    )
    print(f"results: {out}/bench-router-{stamp}.{{json,md}}")
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
