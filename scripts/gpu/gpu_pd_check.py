"""GPU PD check: a prefill + decode pair (as the chart renders it) behind the pdstack router.

    python3 scripts/gpu/gpu_pd_check.py --connector nixl --out DIR [--bench] [--run-pd]
    python3 scripts/gpu/gpu_pd_check.py --connector lmcache --out DIR --bench
    .venv/bin/python scripts/gpu/gpu_pd_check.py --mode cpu --connector nixl --out DIR
    .venv/bin/python scripts/gpu/gpu_pd_check.py --mode fake --connector lmcache --out DIR

Per connector it checks, through the router with the `openai` client (chat and completions,
streamed and not, greedy): the answer equals the decode engine's own answer to the same request
up to a near-tie of the random-weight model (scripts/gpu/verdicts.py says what is accepted);
the decoder's `vllm:external_prefix_cache_hits_total` grows by the prompt's tokens (LMCache: and
its log says it retrieved each whole prompt); no KV-transfer failure in metrics or logs; the
router's PD metrics count what was sent. LMCache also: `max_tokens: 1`, a tool request and a
prefill that stops at its first token, and the prefiller is alive at the end (a request without
`disagg_spec` kills an LMCache PD sender). Then `vllm bench serve` through the router, and with
--run-pd, run_pd.sh through the router in PD mode and in aggregated (round-robin) mode.
Writes DIR/check-<connector>.json (and bench/run_pd results); every phase is time-boxed and the
JSON is written after each one, so a cut run still says how far it got.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
from gpu_stack import SERVED, Stack, start_fake_pair, start_pair, start_router  # noqa: E402
from procs import free_port, metric_sum, post_json, scrape_metrics  # noqa: E402
from verdicts import (  # noqa: E402
    Step,
    bench_hits_expected,
    compare_greedy,
    failure_lines,
    retrieved_covers,
)

MAX_TOKENS = 16
PD_FAILURES = ("prefill_failed", "decode_failed", "kv_transfer_missing", "timeout",
               "prefill_unavailable", "decode_unavailable", "internal_error")  # fmt: skip
WORDS = ["prefill", "decode", "cache", "transfer", "block", "token", "engine", "router", "stream",
         "answer", "model", "layer", "attention", "batch", "queue", "latency", "memory", "network",
         "prompt", "request"]  # fmt: skip
RETRIEVED = re.compile(r"Retrieved (\d+) out of (\d+)")
TOP_LOGPROBS = 5


def prompt(n_words: int, seed: int) -> str:
    return " ".join(WORDS[(seed * 7 + i * (seed + 3)) % len(WORDS)] for i in range(n_words))


PROMPTS = [prompt(n, i) for i, n in enumerate((60, 180, 420, 900))]


class Results:
    """The JSON of one connector's run, rewritten after each phase."""

    def __init__(self, path: Path, connector: str, mode: str) -> None:
        self.path = path
        self.data: dict[str, Any] = {
            "connector": connector,
            "mode": mode,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "checks": [],
            "phases": {},
        }
        self.save()

    def check(self, name: str, ok: bool | None, **detail: Any) -> None:
        """ok None: not applicable here (recorded, not failed)."""
        self.data["checks"].append({"name": name, "ok": ok, **detail})
        mark = "PASS" if ok else ("n/a " if ok is None else "FAIL")
        print(f"  [{mark}] {name} {json.dumps(detail)[:300]}", flush=True)
        self.save()

    def phase(self, name: str, seconds: float, status: str, **extra: Any) -> None:
        self.data["phases"][name] = {"seconds": round(seconds, 1), "status": status, **extra}
        self.save()

    def save(self) -> None:
        self.path.write_text(json.dumps(self.data, indent=1, default=str))


def decoder_hits(stack: Stack) -> float:
    return metric_sum(
        scrape_metrics(stack.decode.url + "/metrics"), "vllm:external_prefix_cache_hits_total"
    )


def decoder_local_hits(stack: Stack) -> float:
    """Prompt tokens the decoder found in its own prefix cache."""
    return metric_sum(scrape_metrics(stack.decode.url + "/metrics"), "vllm:prefix_cache_hits_total")


def decoder_prompt_tokens(stack: Stack) -> float:
    return metric_sum(scrape_metrics(stack.decode.url + "/metrics"), "vllm:prompt_tokens_total")


def _openai(base: str) -> Any:
    import openai

    return openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=120)


def _call(client: Any, api: str, text: str, stream: bool, **extra: Any) -> dict[str, Any]:
    """One greedy request with the openai client: text, usage, finish, TTFT."""
    started = time.monotonic()
    body: dict[str, Any] = {"model": SERVED, "max_tokens": MAX_TOKENS, "temperature": 0}
    body.update(extra)
    extra_body = {"ignore_eos": True, **body.pop("extra_body", {})}
    ttft = None
    if api == "chat":
        msgs = [{"role": "user", "content": text}]
        if not stream:
            r = client.chat.completions.create(messages=msgs, extra_body=extra_body, **body)
            u = r.usage
            return {
                "text": r.choices[0].message.content or "",
                "finish": r.choices[0].finish_reason,
                "prompt_tokens": u.prompt_tokens if u else None,
                "completion_tokens": u.completion_tokens if u else None,
                "seconds": time.monotonic() - started,
                "tool_calls": bool(r.choices[0].message.tool_calls),
            }
        chunks = client.chat.completions.create(
            messages=msgs, stream=True, stream_options={"include_usage": True},
            extra_body=extra_body, **body,
        )  # fmt: skip
        parts, finish, usage = [], None, None
        for c in chunks:
            if c.choices:
                delta = c.choices[0].delta.content or ""
                if delta and ttft is None:
                    ttft = time.monotonic() - started
                parts.append(delta)
                finish = c.choices[0].finish_reason or finish
            if c.usage:
                usage = c.usage
    else:
        if not stream:
            r = client.completions.create(prompt=text, extra_body=extra_body, **body)
            u = r.usage
            return {
                "text": r.choices[0].text,
                "finish": r.choices[0].finish_reason,
                "prompt_tokens": u.prompt_tokens if u else None,
                "completion_tokens": u.completion_tokens if u else None,
                "seconds": time.monotonic() - started,
            }
        chunks = client.completions.create(
            prompt=text, stream=True, stream_options={"include_usage": True},
            extra_body=extra_body, **body,
        )  # fmt: skip
        parts, finish, usage = [], None, None
        for c in chunks:
            if c.choices:
                if c.choices[0].text and ttft is None:
                    ttft = time.monotonic() - started
                parts.append(c.choices[0].text)
                finish = c.choices[0].finish_reason or finish
            if c.usage:
                usage = c.usage
    return {
        "text": "".join(parts),
        "finish": finish,
        "prompt_tokens": usage.prompt_tokens if usage else None,
        "completion_tokens": usage.completion_tokens if usage else None,
        "seconds": time.monotonic() - started,
        "ttft": ttft,
    }


def _reference(client: Any, api: str, text: str) -> tuple[str, list[Step]]:
    """The decode engine's own greedy answer, with each token's top log-probs (fake engines
    give none)."""
    body: dict[str, Any] = {"model": SERVED, "max_tokens": MAX_TOKENS, "temperature": 0}
    extra = {"ignore_eos": True}
    if api == "chat":
        r = client.chat.completions.create(
            messages=[{"role": "user", "content": text}], logprobs=True,
            top_logprobs=TOP_LOGPROBS, extra_body=extra, **body,
        )  # fmt: skip
        content = (r.choices[0].logprobs.content or []) if r.choices[0].logprobs else []
        steps = [(c.token, {t.token: t.logprob for t in c.top_logprobs}) for c in content]
        return r.choices[0].message.content or "", steps
    r = client.completions.create(prompt=text, logprobs=TOP_LOGPROBS, extra_body=extra, **body)
    lp = r.choices[0].logprobs
    if lp is None:
        return r.choices[0].text, []
    tops = [dict(t or {}) for t in lp.top_logprobs]
    return r.choices[0].text, list(zip(lp.tokens, tops, strict=True))


def _log_text(stack: Stack) -> dict[str, str]:
    out = {}
    for proc in (stack.prefill, stack.decode, stack.router):
        if proc is not None:
            try:
                out[proc.name] = proc.log_path.read_text(errors="replace")
            except OSError:
                out[proc.name] = ""
    return out


def check_requests(stack: Stack, res: Results, real: bool) -> None:
    """Greedy answers through the router equal the decoder's own; the decoder loads the KV."""
    assert stack.router is not None
    router = _openai(stack.router.url)
    alone = _openai(stack.decode.url)  # the receiver/consumer serves plain requests itself
    rows = []
    n = 0
    for api in ("completions", "chat"):
        for stream in (False, True):
            for i, base in enumerate(PROMPTS):
                if stream and i % 2:  # streams on half the prompts: time
                    continue
                # A prompt of its own per request: no prefix is cached on the decoder before
                # its KV arrives, so the external hits are the whole transfer.
                n += 1
                text = f"request {n}: {base}"
                before = decoder_hits(stack) if real else 0.0
                before_local = decoder_local_hits(stack) if real else 0.0
                got = _call(router, api, text, stream)
                hits = (decoder_hits(stack) - before) if real else None
                local = (decoder_local_hits(stack) - before_local) if real else None
                ref_text, steps = _reference(alone, api, text)  # after: must not seed the cache
                rows.append(
                    {
                        "api": api,
                        "stream": stream,
                        "prompt_tokens": got["prompt_tokens"],
                        "decoder_external_hits": hits,
                        "decoder_local_hits": local,
                        "same_output": got["text"] == ref_text,
                        "greedy": compare_greedy(got["text"], steps, ref_text),
                        "text": got["text"],
                        "reference": ref_text,
                        "reference_steps": steps if got["text"] != ref_text else None,
                        "completion_tokens": got["completion_tokens"],
                        "seconds": round(got["seconds"], 4),
                        "ttft": round(got["ttft"], 4) if got.get("ttft") else None,
                    }
                )
    res.data["requests"] = rows
    res.check(
        "greedy output through the router = the decode engine's own, up to a near-tie",
        all(r["greedy"]["ok"] for r in rows),
        equal=sum(r["same_output"] for r in rows),
        requests=len(rows),
        diverged_at=[r["greedy"].get("diverged_at") for r in rows],
    )
    res.check(
        "completion tokens = max_tokens", all(r["completion_tokens"] == MAX_TOKENS for r in rows)
    )
    if real:
        res.check(
            "decoder external prefix-cache hits = prompt tokens, per request",
            all(r["decoder_external_hits"] == r["prompt_tokens"] for r in rows),
            pairs=[(r["prompt_tokens"], r["decoder_external_hits"]) for r in rows],
        )
    else:
        res.check("decoder external prefix-cache hits = prompt tokens", None, why="fake engines")
    res.data["pd_requests"] = len(rows)


def check_lmcache_extras(stack: Stack, res: Results) -> int:
    """What only LMCache PD needs; returns how many of these requests went disaggregated."""
    assert stack.router is not None
    router = _openai(stack.router.url)
    alone = _openai(stack.decode.url)
    text = PROMPTS[1]
    one = _call(router, "completions", text, False, max_tokens=1)
    res.check(
        "max_tokens 1 returns 1 token", one["completion_tokens"] == 1, got=one["completion_tokens"]
    )
    tools = [
        {
            "type": "function",
            "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
        }
    ]
    try:
        tool = _call(router, "chat", text, False, tools=tools, tool_choice="none")
        res.check("a tool request is answered (on the decoder alone)", True, finish=tool["finish"])
    except Exception as exc:  # the tiny model has no tool parser: the engine's own 400 is fine
        res.check(
            "a tool request is answered or refused by the engine, not the router",
            "400" in str(exc) or "tool" in str(exc).lower(),
            error=str(exc)[:200],
        )
    reference = _call(alone, "completions", text, False, max_tokens=4)
    first = (
        _openai(stack.decode.url)
        .completions.create(model=SERVED, prompt=text, max_tokens=1, temperature=0)
        .choices[0]
        .text
    )
    fake = res.data["mode"] == "fake"  # the fake engine has no stop strings
    stopped = None
    if first.strip() and not fake:
        stopped = _call(
            router, "completions", text, False, stop=[first], extra_body={"ignore_eos": False}
        )
    if stopped is None:
        res.check(
            "a prefill that stops at its first token is the answer",
            None,
            why="fake engine or blank first token",
        )
    else:
        res.check(
            "a prefill that stops at its first token is the answer",
            stopped["finish"] == "stop" and stopped["text"] == "",
            got=stopped, reference=reference["text"][:40],
        )  # fmt: skip
    bad = post_status(
        stack.router.url + "/v1/completions",
        {"model": SERVED, "prompt": text, "kv_transfer_params": {"disagg_spec": {}}},
    )
    res.check("a client's kv_transfer_params are refused (400)", bad == 400, status=bad)
    return 1 if stopped is not None else 0


def post_status(url: str, body: dict[str, Any]) -> int:
    try:
        post_json(url, body)
        return 200
    except Exception as exc:
        match = re.search(r"HTTP Error (\d+)", str(exc))
        return int(match.group(1)) if match else -1


def check_failures_and_metrics(stack: Stack, res: Results, real: bool) -> None:
    logs = _log_text(stack)
    bad = {name: failure_lines(text)[:5] for name, text in logs.items()}
    res.check(
        "no transfer failure or traceback in engine/router logs", not any(bad.values()), lines=bad
    )
    if real:
        samples = scrape_metrics(stack.decode.url + "/metrics") | {
            f"prefill:{k}": v for k, v in scrape_metrics(stack.prefill.url + "/metrics").items()
        }
        failed = {
            k: v
            for k, v in samples.items()
            if "nixl" in k and "fail" in k and "_total" in k and "_created" not in k and v
        }
        res.check(
            "no failed NIXL transfers/notifications in engine metrics", not failed, failed=failed
        )
        xfer = {
            k: v
            for k, v in samples.items()
            if "nixl_xfer_time_seconds" in k and ("_sum" in k or "_count" in k)
        }
        res.data["nixl_xfer_time"] = xfer
    if stack.connector == "lmcache":
        got = [(int(a), int(b)) for a, b in RETRIEVED.findall(logs.get(stack.decode.name, ""))]
        res.data["lmcache_retrieved"] = got
        if real:
            res.check(
                "LMCache retrieved each PD request's whole prompt",
                retrieved_covers(got, [r["prompt_tokens"] for r in res.data.get("requests", [])]),
                retrieved=got[:20],
            )
        res.check("the LMCache prefiller (PD sender) is alive", stack.prefill.alive())
    assert stack.router is not None
    m = scrape_metrics(stack.router.url + "/metrics")
    pd = {
        d: metric_sum(m, "pdstack_router_pd_decisions_total", decision=d)
        for d in ("disaggregated", "direct", "recompute", "fallback")
    }
    errors = {k: v for k, v in m.items() if k.startswith("pdstack_router_errors_total") and v}
    pd_failures = {k: v for k, v in errors.items() if any(f'code="{c}"' in k for c in PD_FAILURES)}
    res.data["router_metrics"] = {
        "pd_decisions": pd,
        "errors": errors,
        "ttft_sum": metric_sum(m, "pdstack_router_ttft_seconds_sum"),
        "ttft_count": metric_sum(m, "pdstack_router_ttft_seconds_count"),
        "itl_sum": metric_sum(m, "pdstack_router_itl_seconds_sum"),
        "itl_count": metric_sum(m, "pdstack_router_itl_seconds_count"),
        "prefill_sum": metric_sum(m, "pdstack_router_pd_prefill_seconds_sum"),
        "prefill_count": metric_sum(m, "pdstack_router_pd_prefill_seconds_count"),
    }
    expected = res.data.get("pd_requests", 0) + res.data.get("pd_extra", 0)
    res.check(
        "router counted every PD request as disaggregated",
        pd["disaggregated"] == expected,
        counted=pd,
        expected=expected,
    )
    res.check(
        "router: no PD failure (prefill, KV transfer, decode, timeout)",
        not pd_failures,
        errors=errors,
    )


def run_bench(
    stack: Stack, res: Results, out: Path, python: str, model_dir: Path, prompts: int
) -> None:
    assert stack.router is not None
    real = res.data["mode"] != "fake"
    before = decoder_hits(stack) if real else 0.0
    before_prompt = decoder_prompt_tokens(stack) if real else 0.0
    before_local = decoder_local_hits(stack) if real else 0.0
    before_pd = metric_sum(
        scrape_metrics(stack.router.url + "/metrics"),
        "pdstack_router_pd_decisions_total",
        decision="disaggregated",
    )
    name = f"bench-{stack.connector}.json"
    argv = [python, "-m", "vllm.entrypoints.cli.main", "bench", "serve", "--backend", "openai",
            "--base-url", stack.router.url, "--endpoint", "/v1/completions", "--model", SERVED,
            "--tokenizer", str(model_dir), "--dataset-name", "random", "--random-input-len", "512",
            "--random-output-len", "32", "--num-prompts", str(prompts), "--max-concurrency", "8",
            "--ignore-eos", "--seed", "0", "--ready-check-timeout-sec", "0", "--save-result",
            "--result-dir", str(out), "--result-filename", name, "--disable-tqdm"]  # fmt: skip
    log = out / f"bench-{stack.connector}.log"
    with log.open("w") as fh:
        run = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, timeout=240, check=False,
                             env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    table = [
        ln
        for ln in log.read_text(errors="replace").splitlines()
        if ":" in ln and ("ms" in ln or "tok/s" in ln or "requests" in ln.lower())
    ]
    res.data["bench_table"] = table[-30:]
    data = json.loads((out / name).read_text()) if (out / name).exists() else {}
    completed = data.get("completed")
    res.check(
        "vllm bench serve: every request completed",
        run.returncode == 0 and completed == prompts,
        completed=completed,
        rc=run.returncode,
    )
    if real and data:
        hits = decoder_hits(stack) - before
        local = decoder_local_hits(stack) - before_local
        # The decoder's own prompt-token count (the server adds BOS; the client's count does
        # not). Blocks already in the decoder's prefix cache are not transferred.
        prompt = decoder_prompt_tokens(stack) - before_prompt
        expected = bench_hits_expected(prompt, prompts, stack.connector)
        res.check(
            "bench: decoder external + local prefix-cache hits = the prompts' tokens",
            hits + local == expected,
            hits=hits,
            local_hits=local,
            expected=expected,
            client_input_tokens=data.get("total_input_tokens"),
        )
    pd = (
        metric_sum(
            scrape_metrics(stack.router.url + "/metrics"),
            "pdstack_router_pd_decisions_total",
            decision="disaggregated",
        )
        - before_pd
    )
    res.check("bench: router counted every request as disaggregated", pd == prompts, counted=pd)
    res.data["bench"] = {
        k: data.get(k)
        for k in (
            "completed",
            "total_input_tokens",
            "total_output_tokens",
            "request_throughput",
            "output_throughput",
            "mean_ttft_ms",
            "median_ttft_ms",
            "p99_ttft_ms",
            "mean_tpot_ms",
            "median_itl_ms",
            "p99_itl_ms",
            "duration",
        )
    }


def run_pd_pair(
    stack: Stack,
    res: Results,
    out: Path,
    chart: dict[str, Any],
    python: str,
    work: Path,
    router_env: dict[str, str],
    duration: int,
) -> None:
    """run_pd.sh through the router in PD mode, then a round-robin router over the same pair."""
    results: dict[str, Any] = {}
    workload = {"NUM_USERS": "4", "NUM_ROUNDS": "3", "QPS": "2", "DURATION": str(duration),
                "ANSWER_LEN": "32", "QUESTION_LEN": "64", "SYSTEM_PROMPT": "256",
                "USER_HISTORY": "256", "WARMUP": "2", "SEED": "0"}  # fmt: skip
    env = {**os.environ, **workload, "RESULTS_DIR": str(work / "mrqa"), "PYTHON": python}
    assert stack.router is not None
    agg = start_router(
        stack, chart, python, work, router_env, logic="roundrobin", name="aggregated-router"
    )
    try:
        agg.wait_ready(60)
        for label, url in (("pd", stack.router.url), ("aggregated", agg.url)):
            cmd = [
                "bash",
                str(ROOT / "benchmarks" / "multi-round-qa" / "run_pd.sh"),
                SERVED,
                url + "/v1",
                f"gpu-{label}",
                "--ignore-eos",
            ]
            with (out / f"run_pd-{label}.log").open("w") as fh:
                rc = subprocess.run(
                    cmd,
                    env=env,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    timeout=duration * 3 + 60,
                    check=False,
                ).returncode
            summary = sorted((work / "mrqa" / f"gpu-{label}").glob("*.json"))
            results[label] = {
                "rc": rc,
                "summary": json.loads(summary[-1].read_text()) if summary else None,
            }
    finally:
        agg.stop()
    (out / "run_pd.json").write_text(json.dumps(results, indent=1, default=str))
    res.check(
        "run_pd.sh PD and aggregated both ran",
        all(r["rc"] == 0 for r in results.values()),
        rcs={k: v["rc"] for k, v in results.items()},
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connector", choices=("nixl", "lmcache"), required=True)
    ap.add_argument("--mode", choices=("gpu", "cpu", "fake"), default="gpu")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path, help="logs and scratch (default: OUT/work-CONNECTOR)")
    ap.add_argument("--model-dir", type=Path, help="the tiny model (built by gpu_model.py)")
    ap.add_argument("--chart-args", type=Path, default=HERE / "chart-engines.json")
    ap.add_argument("--engine-python", default=sys.executable, help="Python that has vllm")
    ap.add_argument(
        "--bench-prompts", type=int, default=0, help="vllm bench serve requests (0: skip)"
    )
    ap.add_argument("--run-pd", type=int, default=0, help="run_pd.sh seconds per mode (0: skip)")
    ap.add_argument("--start-timeout", type=float, default=300.0)
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    work = a.work or a.out / f"work-{a.connector}"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    res = Results(a.out / f"check-{a.connector}.json", a.connector, a.mode)
    chart = json.loads(a.chart_args.read_text())
    real = a.mode != "fake"
    router_env = {
        "PYTHONPATH": str(ROOT / "router" / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")
    }
    proxy_port = free_port()
    stack: Stack | None = None
    t0 = time.monotonic()
    try:
        if real:
            assert a.model_dir is not None, "--model-dir is required with real engines"
            stack = start_pair(
                a.connector, a.mode, chart, a.model_dir, work, a.engine_python, proxy_port
            )
        else:
            stack = start_fake_pair(a.connector, work, proxy_port)
        res.data["substitutions"] = stack.substitutions
        res.data["chart_engines"] = chart[a.connector]["engines"]
        stack.router = start_router(stack, chart, sys.executable, work, router_env)
        ready = {p.name: round(p.wait_ready(a.start_timeout), 1) for p in stack.engines()}
        stack.router.wait_ready(60)
        res.phase("start", time.monotonic() - t0, "ok", ready_after_s=ready)
        lmcache = a.connector == "lmcache"

        def extras() -> None:
            res.data["pd_extra"] = check_lmcache_extras(stack, res) if lmcache else 0

        def bench() -> None:
            if a.bench_prompts:
                model = a.model_dir or Path()
                run_bench(stack, res, a.out, a.engine_python, model, a.bench_prompts)

        def run_pd() -> None:
            if a.run_pd:
                run_pd_pair(stack, res, a.out, chart, sys.executable, work, router_env, a.run_pd)

        steps = (
            ("requests", lambda: check_requests(stack, res, real)),
            ("lmcache_extras", extras),
            ("failures_and_metrics", lambda: check_failures_and_metrics(stack, res, real)),
            ("bench", bench),
            ("run_pd", run_pd),
        )
        for name, step in steps:
            t = time.monotonic()
            try:
                step()
                res.phase(name, time.monotonic() - t, "ok")
            except Exception as exc:
                res.phase(
                    name, time.monotonic() - t, "error", error=f"{type(exc).__name__}: {exc}"[:2000]
                )
                traceback.print_exc()
    except Exception as exc:
        res.phase(
            "start", time.monotonic() - t0, "error", error=f"{type(exc).__name__}: {exc}"[-3000:]
        )
        traceback.print_exc()
    finally:
        if stack is not None:
            stack.stop()
        res.data["seconds"] = round(time.monotonic() - t0, 1)
        failed = [c["name"] for c in res.data["checks"] if c["ok"] is False]
        errors = [n for n, p in res.data["phases"].items() if p["status"] != "ok"]
        res.data["ok"] = not failed and not errors and bool(res.data["checks"])
        res.save()
        verdict = "OK" if res.data["ok"] else "FAILED"
        print(f"== {a.connector} ({a.mode}): {verdict} in {res.data['seconds']}s")
        print(f"   failed checks: {failed}; phase errors: {errors}")
    return 0 if res.data["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
