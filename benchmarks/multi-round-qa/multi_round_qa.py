#!/usr/bin/env python3
"""Multi-round QA benchmark for any OpenAI-compatible chat endpoint (PD or aggregated).

N users hold M-round conversations whose history grows (shared system prompt + per-user
history + the model's answers); rounds are launched at a target QPS swept over several levels.
Per level it reports TTFT/ITL/end-to-end percentiles, output tokens/s, request throughput and
goodput against TTFT/ITL SLOs, and writes requests.csv, summary.csv and summary.json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import sys
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import aiohttp
from mrqa.report import format_table, write_requests_csv, write_summary
from mrqa.runner import FailureWatch, RequestRecord, RunConfig, run_level, run_warmup
from mrqa.stats import LevelSummary, SloSpec, summarize_level
from mrqa.workload import UserFactory, WorkloadShape

REPO_ROOT = Path(__file__).resolve().parents[2]
ARRIVALS = {
    "poisson": "Poisson process: exponential gaps with mean 1/qps between launches",
    "uniform": "uniform: launches exactly 1/qps apart",
}


def _qps_list(text: str) -> list[float]:
    values = [float(v) for v in text.split(",") if v.strip()]
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError("QPS levels must be positive numbers, e.g. 0.5,1,2")
    return values


IDLE_CONNECTION_S = 2.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see docs/benchmarks.md)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = p.add_argument
    add("--model", required=True, help="served model name sent in each request")
    add("--base-url", required=True, help="OpenAI base URL, e.g. http://localhost:30080/v1")
    add("--label", default="run", help="names the run in results and plots (default: run)")
    add("--output-dir", type=Path, help="default: <repo>/results/multi-round-qa/<label>")
    add("--users", type=int, default=10, help="concurrent users (sessions) per level")
    add("--rounds", type=int, default=5, help="rounds per user; finished users are replaced")
    add("--qps", type=_qps_list, default=[0.5, 1.0, 2.0], help="comma-separated QPS levels")
    add("--arrival", choices=sorted(ARRIVALS), default="poisson", help="launch spacing")
    add("--duration", type=float, help="seconds of launches per level (default 60)")
    add("--requests", type=int, help="requests per level (with --duration: whichever first)")
    add("--system-prompt-tokens", type=int, default=1000, help="shared system prompt length")
    add("--user-history-tokens", type=int, default=200, help="per-user background in round 1")
    add("--question-tokens", type=int, default=30, help="length of each user question")
    add("--answer-tokens", type=int, default=100, help="max_tokens of each answer")
    add("--warmup-requests", type=int, default=2, help="unmeasured requests before level one")
    add("--cooldown", type=float, default=2.0, help="seconds of idle between levels")
    add("--request-timeout", type=float, default=300.0, help="seconds per request, in total")
    add("--session-header", help="send the user id in this header, e.g. x-user-id")
    add("--api-key", default=os.environ.get("OPENAI_API_KEY"), help="default: $OPENAI_API_KEY")
    add("--no-usage", action="store_true", help="don't ask for stream usage; count chunks")
    add("--ignore-eos", action="store_true", help="send vLLM's ignore_eos so answers are full")
    add("--temperature", type=float, default=0.0)
    add("--slo-ttft-ms", type=float, help="goodput: a good request's TTFT is at most this")
    add("--slo-itl-ms", type=float, help="goodput: a good request's ITL is at most this")
    add("--slo-itl-stat", choices=["mean", "p90", "p99", "max"], default="mean",
        help="which of a request's inter-token gaps the ITL SLO judges (default mean)")  # fmt: skip
    add("--seed", type=int, default=0, help="seeds prompts and Poisson arrivals")
    add("--progress-interval", type=float, default=1.0, help="seconds between progress lines")
    args = p.parse_args(argv)
    if args.duration is None and args.requests is None:
        args.duration = 60.0
    if args.users < 1 or args.rounds < 1:
        p.error("--users and --rounds must be at least 1")
    return args


def build_config(args: argparse.Namespace) -> RunConfig:
    """The run's configuration from parsed options."""
    shape = WorkloadShape(
        rounds=args.rounds,
        system_prompt_tokens=args.system_prompt_tokens,
        user_history_tokens=args.user_history_tokens,
        question_tokens=args.question_tokens,
        answer_tokens=args.answer_tokens,
    )
    return RunConfig(
        model=args.model,
        base_url=args.base_url,
        label=args.label,
        shape=shape,
        users=args.users,
        qps_levels=args.qps,
        arrival=args.arrival,
        duration_s=args.duration,
        requests_per_level=args.requests,
        warmup_requests=args.warmup_requests,
        cooldown_s=args.cooldown,
        request_timeout_s=args.request_timeout,
        session_header=args.session_header,
        api_key=args.api_key,
        include_usage=not args.no_usage,
        ignore_eos=args.ignore_eos,
        temperature=args.temperature,
        seed=args.seed,
        progress_interval_s=args.progress_interval,
    )


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


async def run_benchmark(config: RunConfig, slo: SloSpec, out_dir: Path) -> list[LevelSummary]:
    """Warm up, run every level, and rewrite the results after each level.

    Stops before the next level once the run's first requests have all failed (FailureWatch).
    """
    factory = UserFactory(config.shape, config.seed)
    public = asdict(config)
    public["api_key"] = "***" if config.api_key else None  # never write secrets to results
    header = {
        "label": config.label,
        "model": config.model,
        "base_url": config.base_url,
        "host": platform.node(),
        "started_at": _now(),
        "arrival": ARRIVALS[config.arrival],
        "token_counting": "usage.completion_tokens from the stream when the server sends it "
        "(stream_options.include_usage), else one token per content-bearing chunk; "
        "each level's token_sources says which was used",
        "itl": "gaps between successive content-bearing chunks, pooled over a level's requests",
        "slo": asdict(slo),
        "config": public,
    }
    levels: list[LevelSummary] = []
    records: list[RequestRecord] = []
    # No client-side cap on concurrent streams. Idle connections are dropped after 2 s, before
    # the server drops them (uvicorn, so vLLM and pdstack-router: 5 s): a request never goes out
    # on a connection the server is closing, and through `kubectl port-forward`, where a close
    # from the server's side may never reach the client, never onto a dead connection.
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=IDLE_CONNECTION_S)
    watch = FailureWatch()
    async with aiohttp.ClientSession(connector=connector) as session:
        if config.warmup_requests:
            warm: Counter[str] = await run_warmup(session, config, factory, watch)
            header["warmup"] = dict(warm)
            print(f"warm-up: {dict(warm)}", file=sys.stderr)
        for number, qps in enumerate(config.qps_levels):
            if watch.hopeless:
                break
            if number and config.cooldown_s:
                await asyncio.sleep(config.cooldown_s)
            level = await run_level(session, config, qps, factory, watch)
            results = [r.result for r in level.records]
            levels.append(
                summarize_level(
                    qps, results, level.wall_s, level.launch_window_s, level.delayed_launches, slo
                )
            )
            records.extend(level.records)
            write_requests_csv(out_dir / "requests.csv", records, slo)
            write_summary(out_dir, {**header, "finished_at": _now()}, levels)
    if watch.hopeless:
        header["stopped_early"] = watch.explain()
        print(f"\n{watch.explain()}", file=sys.stderr)
        write_summary(out_dir, {**header, "finished_at": _now()}, levels)
    return levels


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 1 when not a single request succeeded (likely misconfigured)."""
    args = parse_args(argv)
    config = build_config(args)
    slo = SloSpec(ttft_ms=args.slo_ttft_ms, itl_ms=args.slo_itl_ms, itl_stat=args.slo_itl_stat)
    out_dir = args.output_dir or REPO_ROOT / "results" / "multi-round-qa" / args.label
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        levels = asyncio.run(run_benchmark(config, slo, out_dir))
    except KeyboardInterrupt:
        print(f"\ninterrupted; finished levels are in {out_dir}", file=sys.stderr)
        return 130
    print(format_table(config.label, levels))
    print(f"results: {out_dir}")
    if not any(level.completed for level in levels):
        print("no request succeeded: check --base-url, --model and the failures above",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
