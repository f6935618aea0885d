"""What the router benchmark measures: scenarios, their lengths, and where processes run."""

from __future__ import annotations

import os
from dataclasses import dataclass

from benchmarks.router.phase import PhaseSpec


@dataclass(frozen=True)
class Scenario:
    """One closed-loop load against one router setup (or direct to the engines).

    mode: plain (round robin over all engines; direct = all engines) or pd (disagg_prefill over
    prefill/decode halves; direct = the decode half answering plain requests). kv_ms: the decode
    engine's first token after the KV hand-off.
    """

    name: str
    cores: int  # router cores (workers)
    mode: str
    concurrency: int
    max_tokens: int
    ttft_ms: float = 0.0
    itl_ms: float = 0.0
    kv_ms: float = 0.0

    @property
    def streamed_s(self) -> float:
        return (self.ttft_ms + self.itl_ms * self.max_tokens) / 1000

    @property
    def direct_key(self) -> tuple[str, int, int, float, float]:
        """Scenarios with one key share one direct baseline."""
        return (self.mode, self.concurrency, self.max_tokens, self.ttft_ms, self.itl_ms)

    def phase(self, length: str) -> PhaseSpec:
        warm, dur = {"full": (1.5, 5.0), "quick": (0.6, 2.0), "smoke": (0.3, 0.8)}[length]
        if self.concurrency == 1:
            dur = max(dur, 2.0)  # enough one-at-a-time requests for a median on a busy machine
        # Streams must finish a few times inside the window: at least 3 request lengths.
        warm = max(warm, 2 * self.streamed_s)
        dur = max(dur, 3 * self.streamed_s)
        return PhaseSpec(
            self.name, self.concurrency, self.max_tokens, self.ttft_ms, self.itl_ms, warm, dur
        )


def _tiny(name: str, cores: int, mode: str, c: int, tokens: int = 16) -> Scenario:
    return Scenario(name, cores, mode, c, tokens)


def _real(name: str, cores: int, mode: str, c: int) -> Scenario:
    # TTFT 50 ms, one token every 10 ms, 64 tokens; a PD decode's first token 5 ms after the
    # hand-off (the KV pull).
    return Scenario(name, cores, mode, c, 64, 50.0, 10.0, 5.0 if mode == "pd" else 0.0)


def scenarios(length: str, max_router_cores: int) -> list[Scenario]:
    """The issue-14 table; `quick`/`smoke` shrink the c=512 load to fit a 2-core machine."""
    big = 512 if length == "full" else 256
    one = [
        _tiny("plain-tiny", 1, "plain", 32),
        _tiny("light", 1, "plain", 1),
        _real("realistic", 1, "plain", 64),
        _real(f"realistic-{big}", 1, "plain", big),
        _tiny("pd-tiny", 1, "pd", 64),
        _real("pd-realistic", 1, "pd", 64),
    ]
    if length == "smoke":
        one = [s for s in one if s.name in ("plain-tiny", "realistic", "pd-tiny")]
    four = [
        _tiny("plain-tiny", 4, "plain", 256),
        _real("realistic-512", 4, "plain", 512),
        _tiny("pd-tiny", 4, "pd", 256),
    ]
    return one + (four if max_router_cores >= 4 else [])


@dataclass(frozen=True)
class CpuLayout:
    """Router cores first; engines and load generators on the others, never shared with it."""

    router: list[int]  # the largest router set; a 1-core scenario uses its first core
    engines: list[int]
    loadgen: list[int]

    def router_cores(self, count: int) -> list[int]:
        return self.router[:count]


def layout(
    router_cores: int,
    engine_cores: list[int],
    loadgen_cores: list[int],
    router_cpus: list[int] | None = None,
) -> CpuLayout:
    """Default on 16 cores: router 0-3, engines 4-9, load generators 10-15 (a fast engine
    serves a tiny stream with less CPU than the load generator reads it). With fewer than eight
    cores: router on the first, engines and load generators share the rest. `router_cpus`
    puts the routers elsewhere (e.g. off cpu 0, where a machine may take its interrupts)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 8:
        router_cores = 1
    router = router_cpus[:router_cores] if router_cpus else cpus[:router_cores]
    rest = [c for c in cpus if c not in router] or cpus
    if len(cpus) < 8:
        return CpuLayout(router, engine_cores or rest, loadgen_cores or rest)
    loadgen = loadgen_cores or rest[-max(1, len(rest) // 2) :]
    engines = engine_cores or [c for c in rest if c not in loadgen]
    return CpuLayout(router, engines, loadgen)
