"""A simulated PD fleet: llm-d-inference-sim prefill and decode engines whose KV caches
publish events, with a per-token prefill cost so that cache hits shorten TTFT."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "scripts" / "engines"))

import procs  # noqa: E402
import simulators  # noqa: E402


@dataclass(frozen=True)
class SimTiming:
    """The simulators' latency model (see docs/benchmarks.md for why these values)."""

    prefill_overhead_ms: int = 20
    prefill_per_token_ms: float = 0.5
    itl_ms: int = 10
    kv_transfer_ms: int = 5
    max_num_seqs: int = 8
    load_factor: float = 2.0  # latencies stretch up to this factor at max_num_seqs running

    def args(self) -> tuple[str, ...]:
        return (
            "--time-to-first-token", "0",  # use the per-token prefill model below
            "--prefill-overhead", f"{self.prefill_overhead_ms}ms",
            "--prefill-time-per-token", f"{self.prefill_per_token_ms * 1000:.0f}us",
            "--inter-token-latency", f"{self.itl_ms}ms",
            "--kv-cache-transfer-latency", f"{self.kv_transfer_ms}ms",
            "--max-num-seqs", str(self.max_num_seqs),
            "--time-factor-under-load", str(self.load_factor),
            "--max-model-len", "16384",
        )  # fmt: skip


@dataclass
class SimFleet:
    """`prefills` + `decodes` simulators, each behind a KV-event relay."""

    binary: Path
    logs: Path
    prefills: int
    decodes: int
    prefill_kv_blocks: int
    timing: SimTiming = field(default_factory=SimTiming)
    decode_kv_blocks: int = 8192
    sims: list[procs.ManagedProcess] = field(default_factory=list)
    relays: list[simulators.KvRelay] = field(default_factory=list)
    # Prefix-cache counters of prefill engines that were restarted (their counters reset).
    _retired: list[tuple[float, float]] = field(default_factory=list)

    def start(self) -> SimFleet:
        self.logs.mkdir(parents=True, exist_ok=True)
        for i in range(self.prefills + self.decodes):
            relay = simulators.KvRelay()
            self.relays.append(relay)
            self.sims.append(self._start(i, relay, procs.free_port()))
        for sim in self.sims:
            sim.wait_ready(timeout=60.0)
        return self

    def _start(self, i: int, relay: simulators.KvRelay, port: int) -> procs.ManagedProcess:
        blocks = self.prefill_kv_blocks if i < self.prefills else self.decode_kv_blocks
        args, env = simulators.kv_cache_args(relay.inbound, blocks)
        return simulators.start_sim(
            self.binary,
            port,
            self.logs / f"sim-{i}.log",
            name=f"sim{i}",
            log_http=False,
            extra_args=(*self.timing.args(), *args, "--event-batch-size", "1"),
            extra_env=env,
        )

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.sims]

    @property
    def roles(self) -> list[str]:
        return ["prefill"] * self.prefills + ["decode"] * self.decodes

    @property
    def event_ports(self) -> list[int]:
        return [r.port for r in self.relays]

    def restart_prefill(self, i: int = 0) -> None:
        """Crash-restart prefill engine `i` in place: same port, empty cache."""
        self._retired.append(_prefix_counters(self.sims[i].url))
        port = self.sims[i].port
        self.sims[i].kill()
        self.sims[i] = self._start(i, self.relays[i], port)
        self.sims[i].wait_ready(timeout=60.0)

    def prefill_prefix_counters(self) -> tuple[float, float]:
        """(hits, queries) of prompt tokens over the prefill engines, restarts included."""
        hits = sum(h for h, _ in self._retired)
        queries = sum(q for _, q in self._retired)
        for sim in self.sims[: self.prefills]:
            h, q = _prefix_counters(sim.url)
            hits, queries = hits + h, queries + q
        return hits, queries

    def stop(self) -> None:
        for sim in self.sims:
            sim.stop()
        for relay in self.relays:
            relay.close()


def _prefix_counters(url: str) -> tuple[float, float]:
    samples = procs.scrape_metrics(url + "/metrics")
    return (
        procs.metric_sum(samples, "vllm:prefix_cache_hits"),
        procs.metric_sum(samples, "vllm:prefix_cache_queries"),
    )
