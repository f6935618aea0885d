"""The routers under test: pdstack with each prefill policy, and vllm-router's policies, as
one or more replicas behind an L4 balancer; their CPU time and pdstack's KV metrics."""

from __future__ import annotations

import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from kvbench.balancer import TcpBalancer
from kvbench.fleet import ROOT, SimFleet

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "engines"))

import procs

from benchmarks.router.procstat import tree_cpu_seconds

PEER = ROOT / ".cache" / "bench-router" / "vllm-router-venv" / "bin" / "vllm-router"
MODEL = "tiny"


@dataclass(frozen=True)
class Policy:
    """One contender: how its router is started."""

    name: str
    kind: str  # "pdstack" or "vllm-router"
    profile: str = ""  # pdstack --prefill-profile
    index: bool = True  # pdstack: follow the KV events (kv_prefix needs it; others observe)
    peer_policy: str = ""  # vllm-router --prefill-policy
    only_in: tuple[str, ...] = ()  # run in these scenarios only (empty: all)

    def argv(self, fleet: SimFleet, port: int, workers: int, peer: Path = PEER) -> list[str]:
        if self.kind == "pdstack":
            return self._pdstack(fleet, port, workers)
        return self._peer(fleet, port, peer)

    def _pdstack(self, fleet: SimFleet, port: int, workers: int) -> list[str]:
        argv = [sys.executable, "-m", "pdrouter.cli", "--host", "127.0.0.1", "--port", str(port),
                "--workers", str(workers), "--log-level", "warning",
                "--static-backends", ",".join(fleet.urls),
                "--static-models", ",".join([MODEL] * len(fleet.urls)),
                "--static-roles", ",".join(fleet.roles),
                "--routing-logic", "disagg_prefill", "--kv-transport", "nixl",
                "--prefill-profile", self.profile]  # fmt: skip
        if self.index:
            argv += ["--kv-events", "--kv-hash-algo", "fnv64a_cbor", "--kv-hash-seed", "0",
                     "--kv-block-size", "16",
                     "--static-kv-events-ports", ",".join(map(str, fleet.event_ports))]  # fmt: skip
        return argv

    def _peer(self, fleet: SimFleet, port: int, peer: Path) -> list[str]:
        argv = [str(peer), "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
                "--prometheus-port", str(procs.free_port()), "--prometheus-host", "127.0.0.1",
                "--vllm-pd-disaggregation", "--kv-connector", "nixl",
                "--prefill-policy", self.peer_policy, "--decode-policy", "round_robin"]  # fmt: skip
        prefills = fleet.urls[: fleet.prefills]
        for url in prefills:
            argv += ["--prefill", url]
        for url in fleet.urls[fleet.prefills :]:
            argv += ["--decode", url]
        if self.peer_policy == "kv_aware":
            for url, port_ in zip(prefills, fleet.event_ports, strict=False):
                argv += ["--pd-kv-events", f"{url}=tcp://127.0.0.1:{port_}"]
        return argv


POLICIES = {
    p.name: p
    for p in (
        Policy("round-robin", "pdstack", profile="roundrobin"),
        Policy("prefix-guess", "pdstack", profile="least_queue"),
        Policy("kv-events", "pdstack", profile="kv_prefix"),
        # The same router without the index: what following the events costs in CPU.
        Policy(
            "prefix-guess-noindex",
            "pdstack",
            profile="least_queue",
            index=False,
            only_in=("steady",),
        ),
        Policy("vllm-router-cache-aware", "vllm-router", peer_policy="cache_aware"),
        Policy("vllm-router-kv-aware", "vllm-router", peer_policy="kv_aware"),
    )
}


@dataclass
class RouterSet:
    """`replicas` router processes (one port each) and, for more than one, a balancer."""

    policy: Policy
    fleet: SimFleet
    logs: Path
    replicas: int = 1
    workers: int = 1
    peer: Path = PEER
    procs_: list[procs.ManagedProcess] = field(default_factory=list)
    balancer: TcpBalancer | None = None

    def start(self) -> RouterSet:
        for i in range(self.replicas):
            port = procs.free_port()
            argv = self.policy.argv(self.fleet, port, self.workers, self.peer)
            log = self.logs / f"router-{self.policy.name}-{i}.log"
            self.procs_.append(
                procs.ManagedProcess(name=f"router{i}", argv=argv, log_path=log, port=port).start()
            )
        for p in self.procs_:
            _wait_serving(p)
        if self.replicas > 1:
            self.balancer = TcpBalancer([("127.0.0.1", p.port) for p in self.procs_])
        return self

    @property
    def base_url(self) -> str:
        port = self.balancer.port if self.balancer else self.procs_[0].port
        return f"http://127.0.0.1:{port}/v1"

    def cpu_seconds(self) -> float:
        return sum(tree_cpu_seconds(p.proc.pid) for p in self.procs_ if p.proc is not None)

    def metric(self, name: str, **labels: str) -> float:
        """A pdstack metric summed over replicas (0 for other routers)."""
        if self.policy.kind != "pdstack":
            return 0.0
        return sum(
            procs.metric_sum(procs.scrape_metrics(p.url + "/metrics"), name, **labels)
            for p in self.procs_
        )

    def stop(self) -> None:
        if self.balancer is not None:
            self.balancer.close()
        for p in self.procs_:
            p.stop()


def _wait_serving(router: procs.ManagedProcess, timeout: float = 90.0) -> None:
    """Until one chat request goes through (both routers answer /health before engines are
    checked)."""
    deadline = time.monotonic() + timeout
    body = b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}'
    while True:
        try:
            req = urllib.request.Request(
                router.url + "/v1/chat/completions", body, {"content-type": "application/json"}
            )
            with urllib.request.urlopen(req, timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if not router.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"{router.name} did not serve: {router.log_path}")
        time.sleep(0.3)
