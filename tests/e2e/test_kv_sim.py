"""The KV-event index against llm-d's simulator: a fleet of 4 prefill + 8 decode simulators
with KV caches that publish events (through relays: the simulator dials out, vLLM binds), in
multi-turn conversations behind a disagg_prefill router with the kv_prefix profile.

What a user would check: the router hashes blocks exactly as llm-d's KV-cache library does
(the simulator's events verify), every follow-up prefill lands on the engine holding the
conversation's longest prefix, and the cached tokens the router predicted are the ones the
engine then reports. A simulator restart is noticed from its event numbering.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import procs
import pytest
import simulators

from tests.e2e.harness import RouterFactory
from tests.e2e.helpers import MODEL, client, metric

pytestmark = pytest.mark.e2e

PREFILLS = 4
DECODES = 8
USERS = 8
ROUNDS = 3
SYSTEM = "You are a careful assistant for questions about disaggregated serving. " * 12
BACKGROUND_WORDS = 300


@dataclass
class KvFleet:
    prefills: list[procs.ManagedProcess]
    decodes: list[procs.ManagedProcess]
    relays: list[simulators.KvRelay]
    router: procs.ManagedProcess
    logs: Path
    binary: Path


def start_kv_sim(
    binary: Path, relay: simulators.KvRelay, log: Path, port: int
) -> procs.ManagedProcess:
    args, env = simulators.kv_cache_args(relay.inbound, blocks=4096)
    return simulators.start_sim(
        binary, port, log, log_http=False, extra_args=(*args, "--event-batch-size", "1"),
        extra_env=env,
    )  # fmt: skip


@pytest.fixture(scope="module")
def fleet(sim_binary: Path, e2e_logs: Path, router_factory: RouterFactory) -> Iterator[KvFleet]:
    relays = [simulators.KvRelay() for _ in range(PREFILLS + DECODES)]
    sims = [
        start_kv_sim(sim_binary, relay, e2e_logs / f"kvsim-{i}.log", procs.free_port())
        for i, relay in enumerate(relays)
    ]
    try:
        for sim in sims:
            sim.wait_ready(timeout=60.0)
        router = router_factory.start(
            [s.url for s in sims],
            ["prefill"] * PREFILLS + ["decode"] * DECODES,
            "disagg_prefill",
            extra_args=(
                "--kv-transport", "nixl", "--kv-events", "--prefill-profile", "kv_prefix",
                "--kv-hash-algo", "fnv64a_cbor", "--kv-hash-seed", "0", "--kv-block-size", "16",
                "--static-kv-events-ports", ",".join(str(r.port) for r in relays),
            ),
        )  # fmt: skip
        yield KvFleet(sims[:PREFILLS], sims[PREFILLS:], relays, router, e2e_logs, sim_binary)
    finally:
        for sim in sims:
            sim.stop()
        for relay in relays:
            relay.close()


def settle(router: procs.ManagedProcess) -> None:
    """Until the router's index stops changing (events are in flight for a moment)."""
    last = -1.0
    for _ in range(50):
        now = metric(router.url, "pdstack_router_kv_event_batches_total", outcome="applied")
        if now == last:
            return
        last = now
        time.sleep(0.2)


def converse(router_url: str, user: int, history: list[dict[str, str]]) -> None:
    if not history:  # a background of the user's own: most of the prompt is theirs
        background = " ".join(f"fact{user}x{i}" for i in range(BACKGROUND_WORDS))
        history.append({"role": "user", "content": f"About me: {background}"})
        history.append({"role": "assistant", "content": "Noted."})
    history.append({"role": "user", "content": f"user {user} asks question {len(history)}"})
    resp = client(router_url).chat.completions.create(
        model=MODEL, messages=[{"role": "system", "content": SYSTEM}, *history], max_tokens=8
    )
    history.append({"role": "assistant", "content": resp.choices[0].message.content or ""})


def test_follow_ups_land_where_the_engines_say_the_prefix_is(fleet: KvFleet) -> None:
    router = fleet.router.url
    histories: list[list[dict[str, str]]] = [[] for _ in range(USERS)]

    def count(name: str, **labels: str) -> float:
        return metric(router, name, **labels)

    def snapshot() -> dict[str, float]:
        return {
            "yes": count("pdstack_router_kv_prefill_longest_prefix_total", result="yes"),
            "no": count("pdstack_router_kv_prefill_longest_prefix_total", result="no"),
            "exact": count("pdstack_router_kv_predictions_total", result="exact"),
            "over": count("pdstack_router_kv_predictions_total", result="over"),
            "predicted": count("pdstack_router_kv_predicted_cached_tokens_sum", role="prefill"),
            "hits": sum(metric(s.url, "vllm:prefix_cache_hits") for s in fleet.prefills),
        }  # the simulator's counter has no _total suffix

    with ThreadPoolExecutor(USERS) as pool:
        list(pool.map(lambda u: converse(router, u, histories[u]), range(USERS)))
        settle(fleet.router)
        # Round 1 races: prompts arrive together, before any engine reported their blocks.
        before = snapshot()
        for _ in range(ROUNDS - 1):
            list(pool.map(lambda u: converse(router, u, histories[u]), range(USERS)))
            settle(fleet.router)
    after = snapshot()
    delta = {k: after[k] - before[k] for k in after}
    follow_ups = USERS * (ROUNDS - 1)

    assert count("pdstack_router_kv_hash_checks_total", result="mismatch") == 0
    assert count("pdstack_router_kv_hash_checks_total", result="match") > 0
    # Every follow-up went to the engine holding the conversation's longest prefix...
    assert (delta["yes"], delta["no"]) == (follow_ups, 0)
    # ...which then reported exactly the cached tokens the router predicted.
    assert delta["exact"] == follow_ups and after["over"] == 0
    assert delta["hits"] == delta["predicted"] > 0


def test_a_restarted_simulator_is_noticed_from_its_numbering(fleet: KvFleet) -> None:
    router = fleet.router.url
    victim = fleet.prefills[0]
    name = victim.url.split("//")[1]

    def ask(url: str, words: int) -> None:
        content = " ".join(f"word{i}" for i in range(words))
        messages = [{"role": "user", "content": content}]
        client(url).chat.completions.create(model=MODEL, messages=messages, max_tokens=1)

    ask(victim.url, 400)  # the victim holds a long prompt's blocks
    settle(fleet.router)
    held = metric(router, "pdstack_router_kv_index_blocks", engine=name)
    assert held >= 400 // 16
    before = metric(router, "pdstack_router_kv_engine_resets_total", reason="restarted")
    victim.stop()
    restarted = start_kv_sim(
        fleet.binary, fleet.relays[0], fleet.logs / "kvsim-re.log", victim.port
    )
    fleet.prefills[0] = restarted
    restarted.wait_ready(timeout=60.0)
    ask(restarted.url, 40)  # its first event, numbered from 1 again, tells what happened
    settle(fleet.router)
    assert metric(router, "pdstack_router_kv_engine_resets_total", reason="restarted") == before + 1
    assert metric(router, "pdstack_router_kv_index_blocks", engine=name) < held
