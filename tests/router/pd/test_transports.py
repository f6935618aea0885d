"""Golden request bodies of each KV-transfer strategy (no sockets)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pdrouter.discovery.endpoint import Role
from pdrouter.pd.transports.base import MissingKvParams, PrefillResult
from pdrouter.pd.transports.fixed import FixedPeerTransport
from pdrouter.pd.transports.lmcache import LmcacheTransport
from pdrouter.pd.transports.lmcache_notify import KvReadyListener, notified_request_id
from pdrouter.pd.transports.nixl import NixlTransport, prefill_payload
from pdrouter.proxy.context import ClientRequest
from pdrouter.scheduling.request import RequestFeatures

from tests.router.helpers import engine

CLIENT = {
    "model": "tiny",
    "messages": [{"role": "user", "content": "hi"}],
    "max_tokens": 50,
    "max_completion_tokens": 40,
    "stream": True,
    "stream_options": {"include_usage": True},
    "min_tokens": 5,
    "min_completion_tokens": 3,
    "temperature": 0,
    "seed": 7,
}
P_RESPONSE: dict[str, Any] = {
    "id": "chatcmpl-1",
    "choices": [{"message": {"content": "x"}}],
    "usage": {
        "prompt_tokens": 9,
        "completion_tokens": 1,
        "total_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 4},
    },
    "kv_transfer_params": {
        "do_remote_prefill": True,
        "do_remote_decode": False,
        "remote_block_ids": [[1, 2]],
        "remote_engine_id": "e-1",
        "remote_request_id": "chatcmpl-1-ab",
        "remote_host": "localhost",
        "remote_port": 5600,
        "tp_size": 1,
        "some_future_field": {"nested": [1]},
    },
}


def request(payload: dict[str, Any] = CLIENT, api: str = "chat") -> ClientRequest:
    return ClientRequest(
        api=api,
        path="/v1/chat/completions" if api == "chat" else "/v1/completions",
        body=orjson.dumps(payload),
        payload=payload,
        model="tiny",
        stream=bool(payload.get("stream")),
        request_id="rid",
        forward_headers={},
        features=RequestFeatures("tiny"),
        arrived=0.0,
        include_usage=bool(payload.get("stream_options")),
    )


def test_nixl_prefill_body_is_the_toy_proxy_protocol() -> None:
    body = prefill_payload(CLIENT)
    assert body == {
        "model": "tiny",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 1,
        "max_completion_tokens": 1,
        "stream": False,
        "temperature": 0,
        "seed": 7,
        "kv_transfer_params": {
            "do_remote_decode": True,
            "do_remote_prefill": False,
            "remote_engine_id": None,
            "remote_block_ids": None,
            "remote_host": None,
            "remote_port": None,
        },
    }
    assert "max_completion_tokens" not in prefill_payload({"model": "m", "prompt": "p"})
    assert CLIENT["stream"] is True  # the client's body is not mutated


async def _run_prefill(transport: Any, response: dict[str, Any]) -> tuple[PrefillResult, list[Any]]:
    sent: list[Any] = []

    async def send(eng: Any, path: str, body: dict[str, Any], deadline: float) -> dict[str, Any]:
        sent.append((path, body))
        return response

    p, d = engine("10.1.2.3", Role.PREFILL), engine("d", Role.DECODE)
    return await transport.prefill(request(), p, d, send, 5.0), sent


async def test_nixl_decode_body_is_client_body_plus_params_verbatim() -> None:
    t = NixlTransport()
    result, sent = await _run_prefill(t, P_RESPONSE)
    assert sent[0][0] == "/v1/chat/completions"
    d = t.decode_request(request(), result, engine("d", Role.DECODE))
    body = orjson.loads(d.body)
    assert body == {**CLIENT, "kv_transfer_params": P_RESPONSE["kv_transfer_params"]}
    assert d.stream is True and result.cached_tokens == 4


async def test_nixl_override_remote_host_uses_prefill_address() -> None:
    result, _ = await _run_prefill(NixlTransport(override_remote_host=True), P_RESPONSE)
    assert result.kv_params is not None and result.kv_params["remote_host"] == "10.1.2.3"


async def test_nixl_missing_params_is_typed() -> None:
    with pytest.raises(MissingKvParams):
        await _run_prefill(NixlTransport(), {**P_RESPONSE, "kv_transfer_params": None})


async def test_nixl_rewrites_cached_tokens_in_final_usage_event() -> None:
    t = NixlTransport()
    result, _ = await _run_prefill(t, P_RESPONSE)
    d = t.decode_request(request(), result, engine("d", Role.DECODE))
    assert d.transform_stream is not None
    usage = {
        "usage": {"prompt_tokens": 9, "prompt_tokens_details": {"cached_tokens": 9}},
        "choices": [],
    }

    async def upstream():  # type: ignore[no-untyped-def]
        yield b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n'
        yield b"data: " + orjson.dumps(usage)[:20]  # usage event split across reads
        yield orjson.dumps(usage)[20:] + b"\n\ndata: [DONE]\n\n"

    out = b"".join([c async for c in d.transform_stream(upstream())])
    events = [e for e in out.split(b"\n\n") if e]
    assert events[0] == b'data: {"choices":[{"delta":{"content":"a"}}]}'
    assert orjson.loads(events[1][6:])["usage"]["prompt_tokens_details"]["cached_tokens"] == 4
    assert events[2] == b"data: [DONE]"


async def test_lmcache_prefill_and_decode_bodies() -> None:
    listener = KvReadyListener("127.0.0.1", 1)  # not started: we resolve the wait by hand
    t = LmcacheTransport(listener, wait_timeout=1.0)
    d_engine = engine("10.0.0.9", Role.DECODE, init_ports=(7300, 7301), alloc_ports=(7400, 7401))
    p_engine = engine("p", Role.PREFILL)
    sent: list[Any] = []

    async def send(eng: Any, path: str, body: dict[str, Any], deadline: float) -> dict[str, Any]:
        sent.append((path, body))
        if path == "/tokenize":
            return {"tokens": [5, 6, 7], "count": 3}
        req_id = body["kv_transfer_params"]["disagg_spec"]["req_id"]
        for _ in range(2):  # both TP ranks notify
            listener._waiters[req_id].seen += 1
        listener._waiters[req_id].future.set_result(None)
        return {"choices": [{"text": "Hel"}], "kv_transfer_params": {"first_tok": 42}}

    result = await t.prefill(request(), p_engine, d_engine, send, 5.0)
    assert sent[0] == ("/tokenize", {"model": "tiny", "messages": CLIENT["messages"]})
    path, body = sent[1]
    assert path == "/v1/completions" and body["prompt"] == [5, 6, 7]
    assert body["max_tokens"] == 1 and body["stream"] is False
    spec = body["kv_transfer_params"]["disagg_spec"]
    assert body["kv_transfer_params"]["ret_first_tok"] is True
    assert spec["receiver_host"] == "10.0.0.9"
    assert spec["receiver_init_port"] == [7300, 7301] and spec["receiver_alloc_port"] == [
        7400,
        7401,
    ]
    assert spec["req_id"].startswith("pdstack-")
    d = t.decode_request(request(), result, d_engine)
    dbody = orjson.loads(d.body)
    assert d.path == "/v1/completions" and dbody["prompt"] == [5, 6, 7, 42]
    assert dbody["max_tokens"] == 39 and dbody["stream"] is True  # max_completion_tokens - 1
    assert "messages" not in dbody and "kv_transfer_params" not in dbody


async def test_lmcache_request_ids_are_unique_across_instances() -> None:
    a = LmcacheTransport(KvReadyListener("127.0.0.1", 1), 1.0)
    b = LmcacheTransport(KvReadyListener("127.0.0.1", 1), 1.0)
    ids = {a.new_request_id() for _ in range(100)} | {b.new_request_id() for _ in range(100)}
    assert len(ids) == 200


def test_proxy_notif_decoding_tolerates_both_struct_encodings() -> None:
    import msgspec

    assert (
        notified_request_id(msgspec.msgpack.encode({"type": "ProxyNotif", "req_id": "r1"})) == "r1"
    )
    assert notified_request_id(msgspec.msgpack.encode(["ProxyNotif", "r2"])) == "r2"
    assert notified_request_id(b"\xc1garbage") is None


async def test_fixed_peer_sends_same_body_to_decoder() -> None:
    t = FixedPeerTransport()
    result, sent = await _run_prefill(t, P_RESPONSE)
    assert sent[0][1]["max_tokens"] == 1 and "kv_transfer_params" not in sent[0][1]
    d = t.decode_request(request(), result, engine("d", Role.DECODE))
    assert d.body == request().body
