#!/usr/bin/env python3
"""Cache-aware PD routing benchmark: run_pd.sh multi-round QA on a simulated 4P+8D fleet, one
run per routing policy and scenario, at several QPS levels, same seed and load for all.

    .venv/bin/python benchmarks/kv-routing/bench_kv.py --out results/kv-routing
    .venv/bin/python benchmarks/kv-routing/bench_kv.py --scenarios steady,evict --qps 2,4 \\
        --policies round-robin,prefix-guess,kv-events --duration 20

Scenarios (where guessing from prompt characters fails, and a baseline):
  steady    one router process
  replicas  two router replicas behind an L4 balancer (connections alternate)
  workers   one pdstack router with --workers 2 (vllm-router has no such mode: skipped)
  evict     prefill engines with a KV cache of a few conversations: they evict
  restart   prefill engine 0 crashes and restarts half-way through every level
  foreign   the conversations' first rounds reached the engines through another router

Per (scenario, QPS, policy): TTFT p50/p99, goodput against --slo-ttft-ms, the prefill
engines' own prefix-cache hit rate, the share of prefills the pdstack index saw land on the
engine with the longest cached prefix (pdstack routers follow the events in every policy;
only kv-events routes on them), and router CPU per request. Results: results.json and
table.md under --out. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from kvbench.fleet import ROOT, SimFleet, SimTiming  # noqa: E402
from kvbench.report import markdown_table  # noqa: E402
from kvbench.routers import MODEL, PEER, POLICIES, Policy, RouterSet  # noqa: E402

RUN_PD = ROOT / "benchmarks" / "multi-round-qa" / "run_pd.sh"
# Chat workload: a shared system prompt, a per-user background, growing history.
WORKLOAD = ["--users", "12", "--rounds", "6", "--system-prompt-tokens", "600",
            "--user-history-tokens", "700", "--question-tokens", "40", "--answer-tokens", "40",
            "--warmup-requests", "0", "--cooldown", "0"]  # fmt: skip


@dataclass(frozen=True)
class Scenario:
    name: str
    replicas: int = 1
    workers: int = 1
    kv_blocks: int = 4096  # prefill engines' KV cache, in 16-token blocks
    restart: bool = False
    foreign: bool = False


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("steady"),
        Scenario("replicas", replicas=2),
        Scenario("workers", workers=2),
        Scenario("evict", kv_blocks=320),
        Scenario("restart", restart=True),
        Scenario("foreign", foreign=True),
    )
}


def run_pd(
    base_url: str,
    out: Path,
    label: str,
    qps: float,
    seed: int,
    args: argparse.Namespace,
    extra: list[str],
) -> dict[str, object]:
    env = {**os.environ, "RESULTS_DIR": str(out), "PYTHON": sys.executable}
    cmd = ["bash", str(RUN_PD), MODEL, base_url, label, *WORKLOAD, "--qps", str(qps),
           "--duration", str(args.duration), "--seed", str(seed),
           "--slo-ttft-ms", str(args.slo_ttft_ms), "--progress-interval", "60", *extra]  # fmt: skip
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    summary = json.loads((out / label / "summary.json").read_text())
    level: dict[str, object] = summary["levels"][0]
    return level


def warm_foreign(
    fleet: SimFleet, logs: Path, out: Path, seed: int, args: argparse.Namespace
) -> None:
    """Send every conversation's first round through another (round-robin) router."""
    other = RouterSet(POLICIES["round-robin"], fleet, logs).start()
    try:
        requests = int(args.duration * 8) // 6 + 12  # the users a level will start, and more
        run_pd(other.base_url, out, f"foreign-warm-{seed}", 8.0, seed, args,
               ["--rounds", "1", "--requests", str(requests), "--duration", "600"])  # fmt: skip
    finally:
        other.stop()


def run_case(
    policy: Policy, scenario: Scenario, args: argparse.Namespace
) -> list[dict[str, object]]:
    case = f"{scenario.name}-{policy.name}"
    logs = args.out / "logs" / case
    fleet = SimFleet(args.sim, logs, 4, 8, scenario.kv_blocks, SimTiming()).start()
    routers: RouterSet | None = None
    rows = []
    try:
        routers = RouterSet(
            policy, fleet, logs, scenario.replicas, scenario.workers, args.vllm_router
        ).start()
        for level, qps in enumerate(args.qps):
            seed = args.seed + level  # a fresh system prompt and users per level, same for all
            if scenario.foreign:
                warm_foreign(fleet, logs, args.out / "runs", seed, args)
            cpu0, (hits0, queries0) = routers.cpu_seconds(), fleet.prefill_prefix_counters()
            yes0 = routers.metric("pdstack_router_kv_prefill_longest_prefix_total", result="yes")
            no0 = routers.metric("pdstack_router_kv_prefill_longest_prefix_total", result="no")
            timer = None
            if scenario.restart:
                timer = threading.Timer(args.duration / 2, fleet.restart_prefill, (0,))
                timer.start()
            summary = run_pd(routers.base_url, args.out / "runs", f"{case}-{qps:g}", qps, seed,
                             args, [])  # fmt: skip
            if timer is not None:
                timer.join()
            hits, queries = fleet.prefill_prefix_counters()
            yes = routers.metric("pdstack_router_kv_prefill_longest_prefix_total", result="yes")
            no = routers.metric("pdstack_router_kv_prefill_longest_prefix_total", result="no")
            completed = int(summary["completed"])  # type: ignore[call-overload]
            judged = (yes - yes0) + (no - no0)
            rows.append({
                "scenario": scenario.name, "policy": policy.name, "qps": qps,
                "completed": completed, "failed": summary["failed"],
                "ttft_p50_ms": summary["ttft_ms"]["p50"],  # type: ignore[index]
                "ttft_p99_ms": summary["ttft_ms"]["p99"],  # type: ignore[index]
                "goodput": summary["goodput"], "good": summary["good_requests"],
                "engine_hit_rate": (hits - hits0) / max(queries - queries0, 1),
                "on_longest_prefix": (yes - yes0) / judged if judged else None,
                "router_cpu_ms_per_req": 1000 * (routers.cpu_seconds() - cpu0) / max(completed, 1),
            })  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    finally:
        if routers is not None:
            routers.stop()
        fleet.stop()
    return rows


def save(
    args: argparse.Namespace,
    rows: list[dict[str, object]],
    policies: list[str],
    started: float,
    done: bool = False,
) -> None:
    """results.json and table.md under --out: after every case, so an interrupted run keeps
    what it measured ("complete" says whether every case ran)."""
    meta = {"args": {k: str(v) for k, v in vars(args).items()}, "workload": WORKLOAD,
            "timing": asdict(SimTiming()), "wall_s": time.monotonic() - started,
            "cpus": os.cpu_count(), "loadavg_end": os.getloadavg(), "complete": done}  # fmt: skip
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    table = markdown_table(rows, policies, args.slo_ttft_ms)
    (args.out / "table.md").write_text(table)
    if done:
        print(table)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "results" / "kv-routing")
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument(
        "--policies",
        default="round-robin,prefix-guess,kv-events,vllm-router-cache-aware,prefix-guess-noindex",
    )
    p.add_argument("--qps", default="2,4", help="QPS levels")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of launches per level")
    p.add_argument("--slo-ttft-ms", type=float, default=250.0)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--parallel", type=int, default=1, help="cases run at once (own fleets)")
    p.add_argument("--sim", type=Path, default=ROOT / ".tools" / "bin" / "llm-d-inference-sim")
    p.add_argument("--vllm-router", type=Path, default=PEER)
    args = p.parse_args()
    # SIGINT or SIGTERM (even where a shell started us with SIGINT ignored) end the run at once;
    # procs' atexit then stops every fleet and router.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    args.qps = [float(q) for q in args.qps.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    policies = [POLICIES[n] for n in args.policies.split(",")]
    if any(pol.kind == "vllm-router" for pol in policies) and not args.vllm_router.exists():
        sys.exit(f"{args.vllm_router} missing: run benchmarks/router/install_peers.sh")
    cases = [
        (pol, SCENARIOS[s])
        for s in args.scenarios.split(",")
        for pol in policies
        if not (pol.kind == "vllm-router" and SCENARIOS[s].workers > 1)  # no such mode
        and (not pol.only_in or s in pol.only_in)
    ]
    started = time.monotonic()
    rows: list[dict[str, object]] = []
    lock = threading.Lock()

    todo = list(cases)  # scenario by scenario, so cases running at once share a scenario

    def worker() -> None:
        while True:
            with lock:
                if not todo:
                    return
                pol, scen = todo.pop(0)
            result = run_case(pol, scen, args)  # a fleet and routers of its own
            with lock:
                rows.extend(result)
                save(args, rows, [p.name for p in policies], started)  # an interrupted run

    # Daemon threads, so an interrupted main thread does not wait for them.
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, args.parallel))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    save(args, rows, [p.name for p in policies], started, done=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
