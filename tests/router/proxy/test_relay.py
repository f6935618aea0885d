"""The push relay against a real fake engine: whole streams, a paused client, deadlines, ITL."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from pdrouter.proxy.rawclient import RawUpstreamClient
from pdrouter.proxy.relay import PushRelay, StreamClock, observe_many
from pdrouter.proxy.tracking import EngineCall
from pdrouter.stats.breaker import BreakerPolicy, CircuitBreaker
from pdrouter.stats.engine_state import EnginePool
from pdrouter.stats.router_metrics import RouterMetrics
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from tests.doubles.engine_proc import start_fake_engine
from tests.router.helpers import engine as engine_state

pytestmark = pytest.mark.slow
HEADERS = {"content-type": "application/json"}


class Writer:
    """A client connection double: collects writes; `paused` until the test lets it drain."""

    def __init__(self, paused: bool = False) -> None:
        self.data = bytearray()
        self.is_paused = paused
        self.drained = asyncio.Event()
        self.waits = 0

    def write(self, data: bytes) -> None:
        self.data += data

    def paused(self) -> bool:
        return self.is_paused

    async def drain(self) -> None:
        self.waits += 1
        await self.drained.wait()
        self.is_paused = False


@pytest.fixture(scope="module")
def fake():  # type: ignore[no-untyped-def]
    e = start_fake_engine(models=["tiny"], itl_ms=2)
    yield e
    e.stop()


def _relay(resp: Any, idle: float = 5.0) -> tuple[PushRelay, EngineCall, RouterMetrics]:
    state = engine_state("e1")
    pool = EnginePool(lambda: CircuitBreaker(BreakerPolicy(3, 10.0)), 60.0)
    metrics = RouterMetrics(pool, 60.0)
    call = EngineCall(state, metrics, "aggregated")
    return PushRelay(resp, StreamClock(call, metrics, "tiny", 0.0), idle), call, metrics


async def _post(client: RawUpstreamClient, url: str, tokens: int) -> Any:
    body = orjson.dumps({"model": "tiny", "prompt": "a b", "max_tokens": tokens, "stream": True})
    return await client.post(url + "/v1/completions", body, HEADERS)


async def test_a_whole_stream_arrives_and_the_connection_is_reused(fake) -> None:  # type: ignore[no-untyped-def]
    client = RawUpstreamClient(1.0, 5.0, 5.0)
    relay, call, _ = _relay(await _post(client, fake.url, 20))
    writer = Writer()
    assert await relay.run(writer) is None
    assert bytes(writer.data).count(b"data: {") == 20
    assert bytes(writer.data).endswith(b"data: [DONE]\n\n")
    assert call.engine.in_flight == 0
    assert sum(len(v) for v in client._idle.values()) == 1


async def test_a_paused_client_stops_the_engine_reads_and_then_gets_everything(fake) -> None:  # type: ignore[no-untyped-def]
    client = RawUpstreamClient(1.0, 5.0, 0.3)
    relay, _, _ = _relay(await _post(client, fake.url, 50), idle=0.3)
    writer = Writer(paused=True)
    task = asyncio.create_task(relay.run(writer))
    await asyncio.sleep(0.8)  # longer than the idle deadline: a paused relay must not time out
    assert writer.waits == 1 and not task.done()
    held = len(writer.data)
    writer.drained.set()
    assert await task is None
    assert held < len(writer.data)
    assert bytes(writer.data).count(b"data: {") == 50


async def test_an_engine_that_stalls_mid_stream_is_reported_as_timed_out(fake) -> None:  # type: ignore[no-untyped-def]
    fake.set_faults(stall_mid_stream={"after_chunks": 2})
    try:
        client = RawUpstreamClient(1.0, 5.0, 0.3)
        relay, call, _ = _relay(await _post(client, fake.url, 10), idle=0.3)
        error = await relay.run(Writer())
    finally:
        fake.set_faults()
    assert error is not None and error.code == "timeout"
    assert call.engine.in_flight == 0
    assert sum(len(v) for v in client._idle.values()) == 0  # the stalled connection was dropped


async def test_cancelling_the_relay_drops_the_engine_connection(fake) -> None:  # type: ignore[no-untyped-def]
    client = RawUpstreamClient(1.0, 5.0, 5.0)
    relay, call, metrics = _relay(await _post(client, fake.url, 500))
    task = asyncio.create_task(relay.run(Writer()))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert call.engine.in_flight == 0
    assert sum(len(v) for v in client._idle.values()) == 0
    text = generate_latest(metrics.registry).decode()
    assert 'outcome="cancelled"' in text


def test_observe_many_matches_observing_one_by_one() -> None:
    values = [0.0005, 0.01, 0.01, 0.2, 3.0, 1e6, 0.0]
    one, many = CollectorRegistry(), CollectorRegistry()
    h1 = Histogram("h", "h", ["m"], registry=one, buckets=(0.001, 0.01, 0.1, 1.0))
    h2 = Histogram("h", "h", ["m"], registry=many, buckets=(0.001, 0.01, 0.1, 1.0))
    for v in values:
        h1.labels("x").observe(v)
    observe_many(h2.labels("x"), values)
    assert _samples(one) == _samples(many)


def _samples(registry: CollectorRegistry) -> list[str]:
    lines = generate_latest(registry).decode().splitlines()
    return [line for line in lines if "_created" not in line]  # creation times differ
