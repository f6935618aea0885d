"""The KV-event index against real vLLM CPU engines (the session's prefill + decode pair, which
publish KV-cache events).

What a user would check: the router hashes prompts exactly as vLLM does (vLLM's own hashing
code computes the reference); after a request, an independent subscriber's index names the
engine and the very blocks of that prompt, and the engine's own prefix-cache hit counter
confirms them on the next request, as does the router's prediction metric; /reset_prefix_cache
(AllBlocksCleared) and an engine crash empty the engine's entry.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import engines
import httpx
import procs
import pytest
from pdrouter.config import KvHashAlgo
from pdrouter.discovery.endpoint import Endpoint
from pdrouter.kvcache.hashing import BlockHasher

from tests.e2e.harness import EnginePair, EngineSlot, RouterFactory
from tests.e2e.helpers import IGNORE_EOS, MODEL, client, metric, unique_prompt, wait_router_ready
from tests.e2e.kv_watch import KvWatch, vllm_hasher

pytestmark = pytest.mark.e2e

BLOCK = 128  # vLLM's CPU block size
HITS = "vllm:prefix_cache_hits_total"
_REFERENCE = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("h", sys.argv[1])
h = importlib.util.module_from_spec(spec); spec.loader.exec_module(h)
out = {}
tokens = json.loads(sys.argv[2])
for algo in ("sha256", "sha256_cbor"):
    fn = h.get_hash_fn_by_name(algo)
    for seed in ("vllm-none-hash", "0"):  # no PYTHONHASHSEED, and the chart's pin
        parent, keys = fn(seed), []
        for i in range(0, len(tokens) - 15, 16):
            parent = fn((parent, tuple(tokens[i:i + 16]), None))
            keys.append(int.from_bytes(parent, "big") & (2**64 - 1))
        out[f"{algo}/{seed}"] = keys
print(json.dumps(out))
"""


def test_block_hashes_equal_vllms_own() -> None:
    """vLLM's hash functions (kv_cache_utils.hash_block_tokens over utils/hashing.py, the low
    64 bits as VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES publishes them) against ours."""
    python = engines.ensure_vllm()
    site = next((engines.VLLM_VENV / "lib").glob("python3*/site-packages"))
    tokens = [(i * 7919) % 70_000 for i in range(16 * 6 + 5)]  # ids above 65535 too
    out = subprocess.run(
        [str(python), "-c", _REFERENCE, str(site / "vllm/utils/hashing.py"), json.dumps(tokens)],
        check=True,
        capture_output=True,
        text=True,
    )
    reference = json.loads(out.stdout)
    for key, keys in reference.items():
        algo, seed = key.split("/")
        ours = BlockHasher(KvHashAlgo(algo), 16, None if seed == "vllm-none-hash" else seed)
        assert list(ours.hashes(MODEL, tokens)) == keys, key


def slot_endpoint(slot: EngineSlot, role: str) -> Endpoint:
    from pdrouter.discovery.endpoint import Role

    return Endpoint(
        id=slot.url,
        url=slot.url,
        model=MODEL,
        role=Role(role),
        kv_events_port=slot.kv_events_port,
        kv_events_replay_port=slot.kv_replay_port,
    )


@pytest.fixture(scope="module")
def router(engine_pair: EnginePair, router_factory: RouterFactory) -> procs.ManagedProcess:
    p, d = engine_pair.prefill, engine_pair.decode
    return router_factory.start(
        [p.url, d.url],
        ["prefill", "decode"],
        "disagg_prefill",
        extra_args=(
            "--kv-transport", "nixl", "--kv-events", "--prefill-profile", "kv_prefix",
            "--kv-block-size", str(BLOCK),
            "--static-kv-events-ports", f"{p.kv_events_port},{d.kv_events_port}",
            "--static-kv-events-replay-ports", f"{p.kv_replay_port},{d.kv_replay_port}",
        ),
    )  # fmt: skip


@pytest.fixture
def watch(healthy_pair: EnginePair) -> Iterator[KvWatch]:
    w = KvWatch(
        [
            slot_endpoint(healthy_pair.prefill, "prefill"),
            slot_endpoint(healthy_pair.decode, "decode"),
        ],
        vllm_hasher(BLOCK),
    )
    yield w
    w.close()


def prompt_keys(engine_url: str, prompt: str) -> tuple[int, ...]:
    tokens = httpx.post(engine_url + "/tokenize", json={"model": MODEL, "prompt": prompt}).json()
    return vllm_hasher(BLOCK).hashes(MODEL, tokens["tokens"])


def complete(router_url: str, prompt: str) -> None:
    client(router_url).completions.create(
        model=MODEL, prompt=prompt, max_tokens=4, temperature=0.0, extra_body=IGNORE_EOS
    )


def router_blocks(router: procs.ManagedProcess, slot: EngineSlot) -> float:
    return metric(router.url, "pdstack_router_kv_index_blocks", engine=slot.url.split("//")[1])


def test_index_names_the_blocks_the_engine_then_hits(
    router: procs.ManagedProcess, healthy_pair: EnginePair, watch: KvWatch
) -> None:
    prefill = healthy_pair.prefill
    first = unique_prompt(repeats=12)  # ~600 tokens: 4 full blocks
    keys = prompt_keys(prefill.url, first)
    assert len(keys) >= 3
    assert watch.held(prefill.url, keys) == 0
    complete(router.url, first)
    # The prefill engine reports every full block of that prompt, under our hashes.
    assert watch.wait(lambda: watch.held(prefill.url, keys) == len(keys)), watch.blocks(prefill.url)

    follow_up = first + "\nand one more question about the same code?"
    follow_keys = prompt_keys(prefill.url, follow_up)
    shared = 0
    for a, b in zip(keys, follow_keys, strict=False):
        if a != b:
            break
        shared += 1
    assert shared >= 2
    hits_before = metric(prefill.url, HITS)
    exact_before = metric(router.url, "pdstack_router_kv_predictions_total", result="exact")
    complete(router.url, follow_up)
    # The engine's own counter: the blocks the index named were served from its prefix cache.
    assert metric(prefill.url, HITS) - hits_before == shared * BLOCK
    # The router predicted that, and the engine's usage (cached_tokens) agreed.
    exact = metric(router.url, "pdstack_router_kv_predictions_total", result="exact")
    assert exact == exact_before + 1, router.log_text()[-2000:]
    assert metric(router.url, "pdstack_router_kv_hash_checks_total", result="mismatch") == 0
    assert metric(router.url, "pdstack_router_kv_hash_checks_total", result="match") > 0


def test_reset_prefix_cache_empties_the_entry(
    router: procs.ManagedProcess, healthy_pair: EnginePair, watch: KvWatch
) -> None:
    prefill = healthy_pair.prefill
    complete(router.url, unique_prompt(repeats=8))
    assert watch.wait(lambda: watch.blocks(prefill.url) > 0)
    resp = httpx.post(prefill.url + "/reset_prefix_cache", timeout=30)
    assert resp.status_code == 200, resp.text
    # vLLM queues AllBlocksCleared and publishes it with the engine's next step; an idle engine
    # takes none, so give it one: a prompt shorter than a block, which stores nothing.
    step = httpx.post(
        prefill.url + "/v1/completions",
        json={"model": MODEL, "prompt": "hi", "max_tokens": 1},
        timeout=60,
    )
    assert step.status_code == 200, step.text
    assert watch.wait(lambda: watch.blocks(prefill.url) == 0)
    assert watch.wait(lambda: router_blocks(router, prefill) == 0)


def test_engine_crash_empties_the_entry_and_restart_refills_it(
    router: procs.ManagedProcess, healthy_pair: EnginePair, watch: KvWatch
) -> None:
    prefill = healthy_pair.prefill
    complete(router.url, unique_prompt(repeats=8))
    assert watch.wait(lambda: router_blocks(router, prefill) > 0)
    prefill.kill()
    assert watch.wait(lambda: router_blocks(router, prefill) == 0)
    assert watch.wait(lambda: watch.blocks(prefill.url) == 0)
    prefill.ensure_running()
    wait_router_ready(router.url)
    prompt = unique_prompt(repeats=8)
    complete(router.url, prompt)
    keys = prompt_keys(prefill.url, prompt)
    assert watch.wait(lambda: watch.held(prefill.url, keys) == len(keys))
    resets = metric(router.url, "pdstack_router_kv_engine_resets_total", reason="disconnected")
    assert resets >= 1
