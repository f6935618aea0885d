"""Check a real prefill/decode pair by hand, without the router, and print what happened.

    .venv/bin/python scripts/engines/pd_check.py            # starts its own pair, then stops it
    .venv/bin/python scripts/engines/pd_check.py --prefill URL --decode URL   # existing pair

For each prompt it does the NIXL two-step a router does (prefill with max_tokens 1 and
`kv_transfer_params.do_remote_decode`, then decode with the params the prefill returned) and
prints the prompt's token count, how many tokens the decoder loaded from the prefiller
(`vllm:external_prefix_cache_hits_total`), and whether the greedy answer equals the prefill
engine computing the same prompt alone.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

import engines
import procs

HITS = "vllm:external_prefix_cache_hits_total"
LINE = "def handle(request, engine, config):\n    return engine.forward(request.body)\n"


def completion(url: str, body: dict[str, object]) -> dict[str, object]:
    """POST /v1/completions."""
    return procs.post_json(url + "/v1/completions", {"model": "tiny", **body})


def text_of(answer: dict[str, object]) -> str:
    """The first choice's text."""
    choices = answer["choices"]
    assert isinstance(choices, list)
    return str(choices[0]["text"])


def check(prefill: str, decode: str, repeats: list[int], max_tokens: int) -> bool:
    """Run the two-step for each prompt size; print one row per prompt; True if all good."""
    print(f"{'prompt':>7} {'loaded':>7} {'same':>5} {'prefill_ms':>10} {'decode_ms':>9}")
    ok = True
    greedy = {"max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}
    for n in repeats:
        prompt = f"# {uuid.uuid4().hex}\n" + LINE * n
        before = procs.metric_sum(procs.scrape_metrics(decode + "/metrics"), HITS)
        t0 = time.monotonic()
        first = completion(
            prefill,
            {
                "prompt": prompt,
                "max_tokens": 1,
                "kv_transfer_params": {"do_remote_decode": True, "do_remote_prefill": False},
            },
        )
        t1 = time.monotonic()
        second = completion(
            decode, {"prompt": prompt, **greedy, "kv_transfer_params": first["kv_transfer_params"]}
        )
        t2 = time.monotonic()
        time.sleep(0.5)  # the counter is published just after the answer
        loaded = procs.metric_sum(procs.scrape_metrics(decode + "/metrics"), HITS) - before
        alone = completion(prefill, {"prompt": prompt, **greedy})
        usage = second["usage"]
        assert isinstance(usage, dict)
        tokens = int(usage["prompt_tokens"])
        same = text_of(second) == text_of(alone)
        ok = ok and same and loaded == tokens
        print(
            f"{tokens:>7} {loaded:>7.0f} {same!s:>5} {1000 * (t1 - t0):>10.0f} "
            f"{1000 * (t2 - t1):>9.0f}"
        )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description="NIXL prefill/decode check without the router")
    parser.add_argument("--prefill", help="URL of a running prefill engine")
    parser.add_argument("--decode", help="URL of a running decode engine")
    parser.add_argument("--repeats", default="1,2,4,8,12", help="prompt sizes (x ~30 tokens)")
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    repeats = [int(r) for r in args.repeats.split(",")]
    if args.prefill and args.decode:
        return 0 if check(args.prefill, args.decode, repeats, args.max_tokens) else 1

    engines.ensure_vllm()
    engines.ensure_tiny_model()
    logs = Path(tempfile.mkdtemp(prefix="pd-check-"))
    pair = [
        engines.start_vllm("prefill", procs.free_port(), 0, procs.free_port(), logs / "p.log"),
        engines.start_vllm("decode", procs.free_port(), 1, procs.free_port(), logs / "d.log"),
    ]
    try:
        for engine in pair:
            print(f"{engine.name} ready after {engine.wait_ready(300):.1f}s", flush=True)
        return 0 if check(pair[0].url, pair[1].url, repeats, args.max_tokens) else 1
    finally:
        for engine in pair:
            engine.stop()


if __name__ == "__main__":
    sys.exit(main())
