"""Routing on the KV-event index in a real router process (one and two workers): prefills go
to the engine whose event stream says it holds the prompt's blocks, and stop going there when
it reports them cleared. Engines are fake (tests/doubles); their event streams come from
FakeKvPublisher, which speaks vLLM's wire protocol."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from pdrouter.config import KvHashAlgo
from pdrouter.kvcache.hashing import BlockHasher

from tests.doubles.kv_publisher import FakeKvPublisher, cleared, stored
from tests.harness.router_proc import RouterProcess, static_args

pytestmark = pytest.mark.slow

BLOCK = 4
PROMPT = "the shared system prompt of a long conversation " * 12


@pytest.fixture
def publishers() -> Iterator[list[FakeKvPublisher]]:
    pubs = [FakeKvPublisher(), FakeKvPublisher()]
    yield pubs
    for pub in pubs:
        pub.close()


def prefills_by_engine(engines: list[object]) -> list[int]:
    return [e.stats()["by_path"].get("/v1/completions", 0) for e in engines]  # type: ignore[attr-defined]


def wait_indexed(router: RouterProcess, engine_url: str, present: bool) -> None:
    name = engine_url.split("://", 1)[-1]
    deadline = time.monotonic() + 20
    while True:
        blocks = router.metric("pdstack_router_kv_index_blocks", engine=name)
        if (blocks > 0) == present:
            return
        assert time.monotonic() < deadline, f"index never showed {name} present={present}"
        time.sleep(0.1)


@pytest.mark.parametrize("workers", [1, 2])
def test_prefill_follows_the_engines_reported_blocks(  # type: ignore[no-untyped-def]
    fake_engine_factory, publishers, workers
) -> None:
    p1 = fake_engine_factory(models=["tiny"], role="prefill")
    p2 = fake_engine_factory(models=["tiny"], role="prefill")
    d = fake_engine_factory(models=["tiny"], role="decode")
    ports = f"{publishers[0].port},{publishers[1].port},"
    replay = f"{publishers[0].replay_port},{publishers[1].replay_port},"
    args = [
        *static_args([p1, p2, d], roles=["prefill", "prefill", "decode"]),
        "--routing-logic", "disagg_prefill", "--workers", str(workers),
        "--kv-events", "--prefill-profile", "kv_prefix", "--kv-block-size", str(BLOCK),
        "--kv-hash-seed", "0", "--static-kv-events-ports", ports,
        "--static-kv-events-replay-ports", replay, "--engine-scrape-interval", "60",
    ]  # fmt: skip
    tokens = httpx.post(p2.url + "/tokenize", json={"model": "tiny", "prompt": PROMPT}).json()
    keys = BlockHasher(KvHashAlgo.SHA256, BLOCK, "0").hashes("tiny", tokens["tokens"])
    with RouterProcess(args).start(timeout=120) as router:
        # p2 reports the prompt's blocks (published until the router has subscribed).
        deadline = time.monotonic() + 20
        while router.metric("pdstack_router_kv_index_blocks", engine=p2.url[7:]) == 0:
            publishers[1].publish(stored(keys))
            time.sleep(0.2)
            assert time.monotonic() < deadline, router.log_text()
        before = prefills_by_engine([p1, p2])
        for _ in range(8):  # fresh connections: with two workers both serve some
            body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 2}
            assert httpx.post(router.url + "/v1/completions", json=body).status_code == 200
        after = prefills_by_engine([p1, p2])
        assert [a - b for a, b in zip(after, before, strict=True)] == [0, 8]
        assert router.metric("pdstack_router_kv_prefill_longest_prefix_total", result="yes") == 8

        publishers[1].publish(cleared())  # e.g. /reset_prefix_cache on p2
        wait_indexed(router, p2.url, present=False)
        time.sleep(0.3)  # every worker got the fan-out
        before = after
        for _ in range(8):
            body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 2}
            assert httpx.post(router.url + "/v1/completions", json=body).status_code == 200
        after = prefills_by_engine([p1, p2])
        spread = [a - b for a, b in zip(after, before, strict=True)]
        assert min(spread) > 0, spread  # nothing cached anywhere: the two take turns
