"""The httptools upstream client against a real fake engine: bodies, streams, errors, reuse."""

from __future__ import annotations

import asyncio
import socket

import orjson
import pytest
from pdrouter.proxy.client import EngineConnectError, EngineTimeout
from pdrouter.proxy.rawclient import RawUpstreamClient

from tests.doubles.engine_proc import start_fake_engine

pytestmark = pytest.mark.slow
HEADERS = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def engine():  # type: ignore[no-untyped-def]
    e = start_fake_engine(models=["tiny"], itl_ms=1)
    yield e
    e.stop()


def _body(**extra: object) -> bytes:
    return orjson.dumps({"model": "tiny", "prompt": "a b c", "max_tokens": 4, **extra})


async def test_json_body_stream_and_keep_alive_reuse(engine) -> None:  # type: ignore[no-untyped-def]
    client = RawUpstreamClient(1.0, 5.0, 5.0)
    resp = await client.post(engine.url + "/v1/completions", _body(), HEADERS)
    assert resp.status == 200 and resp.headers["content-type"].startswith("application/json")
    assert orjson.loads(await resp.read(5.0))["usage"]["completion_tokens"] == 4
    resp = await client.post(engine.url + "/v1/completions", _body(stream=True), HEADERS)
    data = b"".join([c async for c in resp.chunks()])
    assert data.count(b"data: {") == 4 and data.endswith(b"data: [DONE]\n\n")
    assert sum(len(v) for v in client._idle.values()) == 1  # both requests used one connection
    status, metrics = await client.get(engine.url + "/metrics", 5.0)
    assert status == 200 and b"vllm:num_requests_running" in metrics
    await client.close()


async def test_refused_connection_and_first_byte_timeout(engine) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    client = RawUpstreamClient(1.0, 0.5, 5.0)
    with pytest.raises(EngineConnectError):
        await client.post(f"http://127.0.0.1:{dead}/v1/completions", _body(), HEADERS)
    engine.set_faults(hang={"count": 1})
    with pytest.raises(EngineTimeout):
        await client.post(engine.url + "/v1/completions", _body(), HEADERS)
    engine.reset()
    await client.close()


async def test_abandoned_stream_drops_the_connection(engine) -> None:  # type: ignore[no-untyped-def]
    engine.admin_config(itl_ms=100)
    client = RawUpstreamClient(1.0, 5.0, 5.0)
    resp = await client.post(
        engine.url + "/v1/completions", _body(stream=True, max_tokens=50), HEADERS
    )
    async for _ in resp.chunks():
        break
    resp.release()
    await asyncio.sleep(0.3)
    assert engine.stats()["cancelled"] >= 1
    assert sum(len(v) for v in client._idle.values()) == 0
    engine.reset()
    await client.close()


async def test_a_slowly_consumed_stream_pauses_reading_from_the_engine() -> None:
    # The iterator relay (used where the push relay cannot write to the client directly):
    # a consumer that stops taking chunks must not make the client buffer the whole answer.
    from pdrouter.proxy.rawclient import HIGH_WATER

    engine = start_fake_engine(models=["tiny"], coalesce_chunks=False, max_model_len=100_000)
    client = RawUpstreamClient(1.0, 5.0, 5.0)
    try:
        resp = await client.post(
            engine.url + "/v1/completions", _body(stream=True, max_tokens=60_000), HEADERS
        )
        chunks = resp.chunks()
        first = await chunks.__anext__()
        await asyncio.sleep(1.5)  # the consumer stalls; the engine could send ~10 MB meanwhile
        conn = resp._conn  # type: ignore[attr-defined]
        held = sum(len(b) for b in conn.body)
        assert conn.paused and held <= HIGH_WATER + 256 * 1024, held
        rest = b"".join([c async for c in chunks])
        assert (first + rest).rstrip().endswith(b"data: [DONE]")
        assert not conn.paused
    finally:
        await client.close()
        engine.stop()


async def test_idle_pooled_connections_are_closed_after_a_while(engine, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # An engine that keeps idle keep-alive connections open must not hold descriptors here.
    from pdrouter.proxy import rawclient

    monkeypatch.setattr(rawclient, "IDLE_CLOSE_S", 0.3)
    client = RawUpstreamClient(1.0, 5.0, 5.0)
    resps = [await client.post(engine.url + "/v1/completions", _body(), HEADERS) for _ in range(1)]
    for resp in resps:
        await resp.read(5.0)
    assert sum(len(v) for v in client._idle.values()) == 1
    await asyncio.sleep(0.8)
    assert sum(len(v) for v in client._idle.values()) == 0
    await client.close()
