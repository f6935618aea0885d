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
from pdrouter.pd.transports.lmcache_shape import tokenize_body
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


def completions(payload: dict[str, Any]) -> ClientRequest:
    return request({"model": "tiny", **payload}, api="completions")


@pytest.mark.parametrize(
    ("payload", "field", "direct"),
    [
        ({"prompt": "x", "max_tokens": 1}, "max_tokens", True),
        ({"prompt": "x", "n": 2}, "n", True),
        ({"prompt": "x", "best_of": 3}, "best_of", True),
        ({"prompt": "x", "logprobs": 2}, "logprobs", True),
        ({"prompt": "x", "logprobs": 0}, "logprobs", True),
        ({"prompt": "x", "echo": True}, "echo", True),
        ({"prompt": "x", "suffix": "y"}, "suffix", True),
        ({"prompt": ["a", "b"]}, "prompt", True),
        ({"prompt": "x", "structured_outputs": {"json": {}}}, "structured_outputs", True),
        ({"prompt": "x", "kv_transfer_params": {"disagg_spec": {}}}, "kv_transfer_params", False),
    ],
)
def test_lmcache_fields_it_cannot_split(payload: dict[str, Any], field: str, direct: bool) -> None:
    t = LmcacheTransport(KvReadyListener("127.0.0.1", 1), 1.0)
    found = t.unsupported(completions(payload))
    assert found is not None and (found.field, found.direct) == (field, direct)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"tools": [{"type": "function"}]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"response_format": {"type": "json_schema"}}, "response_format"),
        ({"logprobs": True, "top_logprobs": 2}, "logprobs"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages"),
    ],
)
def test_lmcache_chat_fields_it_cannot_split(extra: dict[str, Any], field: str) -> None:
    t = LmcacheTransport(KvReadyListener("127.0.0.1", 1), 1.0)
    found = t.unsupported(request({**CLIENT, **extra}))
    assert found is not None and found.field == field and found.direct


def test_lmcache_splits_plain_requests_and_template_fields() -> None:
    t = LmcacheTransport(KvReadyListener("127.0.0.1", 1), 1.0)
    text_parts = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    for extra in (
        {},
        {"tool_choice": "none", "response_format": {"type": "text"}, "n": 1, "logprobs": False},
        {"chat_template_kwargs": {"enable_thinking": False}, "messages": text_parts},
    ):
        assert t.unsupported(request({**CLIENT, **extra})) is None
    assert t.unsupported(completions({"prompt": [[1, 2, 3]], "max_tokens": 2})) is None
    for prompt, sent in (([[1, 2]], [1, 2]), (["ab"], "ab"), ([7], [7]), ("ab", "ab")):
        assert tokenize_body(completions({"prompt": prompt}))["prompt"] == sent


async def test_lmcache_prefill_that_stops_at_its_first_token_is_the_answer() -> None:
    t = LmcacheTransport(KvReadyListener("127.0.0.1", 1), 1.0)
    d_engine = engine("d", Role.DECODE, init_ports=(7300,), alloc_ports=(7400,))
    extra = {"tokens": [1, 2, 3], "first_tok": 9, "first_text": "", "finish_reason": "stop"}
    result = PrefillResult(engine("p", Role.PREFILL), {}, {"first_tok": 9}, extra=extra)
    dreq = t.decode_request(request(), result, d_engine)  # a chat stream with usage
    assert dreq.answer is not None and not dreq.body
    chunks = b"".join([c async for c in dreq.answer.chunks])  # type: ignore[union-attr]
    events = [orjson.loads(e[6:]) for e in chunks.split(b"\n\n") if e and e != b"data: [DONE]"]
    assert chunks.endswith(b"data: [DONE]\n\n")
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    assert events[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    body = t.decode_request(request({**CLIENT, "stream": False}), result, d_engine).answer
    data = orjson.loads(body.body)  # type: ignore[union-attr]
    assert data["object"] == "chat.completion" and data["usage"]["completion_tokens"] == 1
    assert data["choices"][0]["finish_reason"] == "stop"


async def test_kv_ready_listener_drops_oversized_messages() -> None:
    import asyncio

    import msgspec
    import zmq
    import zmq.asyncio

    from tests.harness.router_proc import free_port

    port = free_port()
    listener = KvReadyListener("127.0.0.1", port, max_message_bytes=256)
    await listener.start()
    ctx = zmq.asyncio.Context()
    try:
        ready = listener.register("r1", 1)
        big = ctx.socket(zmq.PUSH)
        big.connect(f"tcp://127.0.0.1:{port}")
        await big.send(b"\x00" * 10_000)  # the listener drops this peer, unread
        good = ctx.socket(zmq.PUSH)
        good.connect(f"tcp://127.0.0.1:{port}")
        await good.send(msgspec.msgpack.encode({"type": "ProxyNotif", "req_id": "r1"}))
        await asyncio.wait_for(ready, 5)
        assert listener.received == 1
        for sock in (big, good):
            sock.close(0)
    finally:
        ctx.term()
        await listener.stop()


def test_zmq_address_brackets_ipv6() -> None:
    from pdrouter.pd.transports.lmcache_notify import zmq_tcp_address

    assert zmq_tcp_address("10.1.2.3", 7500) == "tcp://10.1.2.3:7500"
    assert zmq_tcp_address("fd00::5", 7500) == "tcp://[fd00::5]:7500"
