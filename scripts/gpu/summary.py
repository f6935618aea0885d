"""Print a compact summary of the GPU check's result files (check-*.json, run_pd.json).

python3 scripts/gpu/summary.py RESULTS_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def main(results: Path) -> int:
    print("===== GPU PD check summary")
    for conn in ("nixl", "lmcache"):
        data = _load(results / f"check-{conn}.json")
        if data is None:
            print(f"{conn}: not run")
            continue
        failed = [c["name"] for c in data.get("checks", []) if c.get("ok") is False]
        passed = sum(1 for c in data.get("checks", []) if c.get("ok"))
        bad_phases = {
            n: p.get("error", p["status"])[:200]
            for n, p in data.get("phases", {}).items()
            if p["status"] != "ok"
        }
        print(
            f"{conn} ({data.get('mode')}): {'OK' if data.get('ok') else 'FAILED'} "
            f"in {data.get('seconds')}s, {passed} checks passed, failed: {failed or 'none'}"
        )
        if bad_phases:
            print(f"  phase errors: {bad_phases}")
        start = data.get("phases", {}).get("start", {})
        print(f"  engines ready after: {start.get('ready_after_s')}")
        pairs = [(r["prompt_tokens"], r["decoder_external_hits"]) for r in data.get("requests", [])]
        print(f"  (prompt tokens, decoder external hits): {pairs}")
        local = [r.get("decoder_local_hits") for r in data.get("requests", [])]
        if any(local):
            print(f"  decoder local prefix-cache hits: {local}")
        greedy = [r["greedy"] for r in data.get("requests", []) if "greedy" in r]
        if greedy:
            diverged = [
                (g["diverged_at"], g.get("router_token_gap_nats")) for g in greedy if not g["equal"]
            ]
            equal = sum(g["equal"] for g in greedy)
            print(f"  greedy: {equal}/{len(greedy)} equal; (diverged at, gap nats): {diverged}")
        if data.get("lmcache_retrieved"):
            print(f"  LMCache retrieved (got, needed): {data['lmcache_retrieved'][:12]}")
        rm = data.get("router_metrics") or {}
        if rm:
            ttft = rm["ttft_sum"] / rm["ttft_count"] if rm.get("ttft_count") else None
            itl = rm["itl_sum"] / rm["itl_count"] if rm.get("itl_count") else None
            pre = rm["prefill_sum"] / rm["prefill_count"] if rm.get("prefill_count") else None
            print(
                f"  router: decisions {rm.get('pd_decisions')}, mean TTFT {ttft}, mean ITL {itl}, "
                f"mean prefill leg {pre}"
            )
        if data.get("nixl_xfer_time"):
            print(f"  nixl_xfer_time: {data['nixl_xfer_time']}")
        if data.get("bench"):
            print(f"  bench: {data['bench']}")
    run_pd = _load(results / "run_pd.json")
    if run_pd:
        for label, r in run_pd.items():
            s = r.get("summary") or {}
            levels = s.get("levels") if isinstance(s, dict) else None
            print(f"run_pd {label}: rc {r.get('rc')} {json.dumps(levels or s)[:400]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
