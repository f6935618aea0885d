"""LMCache's native PD mode (seed 001): the router is the PD proxy.

The router tokenizes the prompt, asks the prefiller to push the KV to a chosen decoder
(`disagg_spec`), waits for the prefiller's "KV ready" notifications on its ZMQ PULL socket, then
asks the decoder to continue from the prompt plus the prefiller's first token. The decoder
always speaks the completions API; chat clients get their answer converted to chat chunks.

A prefiller is an LMCache PD sender: a generation request without `disagg_spec` kills its engine
(LMCache 0.5.6, seen on a GPU). So this transport is exclusive: its prefill leg is the only
request a prefill engine ever gets, and whatever it cannot honour runs on a decoder alone.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid

import orjson

from pdrouter.pd.transports.base import (
    DecodeRequest,
    KvWaitTimeout,
    MissingKvParams,
    PrefillResult,
    PrefillSender,
    Unsupported,
)
from pdrouter.pd.transports.lmcache_convert import AnswerConverter, first_token_answer
from pdrouter.pd.transports.lmcache_notify import KvReadyListener
from pdrouter.pd.transports.lmcache_shape import (
    decode_body,
    prefill_body,
    tokenize_body,
    unsupported,
)
from pdrouter.proxy.context import ClientRequest
from pdrouter.stats.engine_state import EngineState


class LmcacheTransport:
    name = "lmcache"
    decode_retryable = False  # the KV was pushed into one decoder's buffer
    decoder_bound_at_prefill = True
    exclusive_prefill = True  # a plain request kills an LMCache PD sender
    prefill_bounded = False  # it also waits for the KV-ready notice

    def __init__(self, listener: KvReadyListener, wait_timeout: float) -> None:
        self.listener = listener
        self.wait_timeout = wait_timeout
        # Unique across router replicas and restarts: a random instance id plus a counter.
        self._instance = uuid.uuid4().hex[:12]
        self._counter = itertools.count(1)

    def unsupported(self, req: ClientRequest) -> Unsupported | None:
        return unsupported(req)

    async def start(self) -> None:
        await self.listener.start()

    async def stop(self) -> None:
        await self.listener.stop()

    def new_request_id(self) -> str:
        return f"pdstack-{self._instance}-{next(self._counter)}"

    async def prefill(
        self,
        req: ClientRequest,
        prefill: EngineState,
        decode: EngineState,
        send: PrefillSender,
        deadline: float,
    ) -> PrefillResult:
        ep = decode.endpoint
        if not ep.lmcache_init_ports or not ep.lmcache_alloc_ports:
            raise MissingKvParams(
                f"decode engine {ep.display_name} publishes no LMCache receiver ports"
            )
        started = time.monotonic()
        tokenized = await send(prefill, "/tokenize", tokenize_body(req), deadline)
        tokens = tokenized.get("tokens")
        if not isinstance(tokens, list) or not tokens:
            raise MissingKvParams(f"engine {prefill.endpoint.display_name} returned no tokens")

        req_id = self.new_request_id()
        body = prefill_body(
            req,
            tokens,
            req_id,
            ep.host,
            list(ep.lmcache_init_ports),
            list(ep.lmcache_alloc_ports),
        )
        ready = self.listener.register(req_id, len(ep.lmcache_init_ports))
        try:
            remaining = max(deadline - (time.monotonic() - started), 0.001)
            response = await send(prefill, "/v1/completions", body, remaining)
            params = response.get("kv_transfer_params")
            first = params.get("first_tok") if isinstance(params, dict) else None
            if not isinstance(first, int):
                raise MissingKvParams(
                    f"prefill engine {prefill.endpoint.display_name} returned no first_tok"
                )
            try:
                async with asyncio.timeout(self.wait_timeout):
                    await ready
            except TimeoutError:
                raise KvWaitTimeout(
                    f"no KV-ready notification for {req_id} within {self.wait_timeout:g}s"
                ) from None
        finally:
            self.listener.forget(req_id)
        choices = response.get("choices") or [{}]
        choice = choices[0] if isinstance(choices[0], dict) else {}
        return PrefillResult(
            prefill,
            response,
            params,
            extra={
                "tokens": tokens,
                "first_tok": first,
                "first_text": str(choice.get("text") or ""),
                "finish_reason": choice.get("finish_reason"),
                "req_id": req_id,
            },
        )

    def decode_request(
        self, req: ClientRequest, result: PrefillResult | None, decode: EngineState
    ) -> DecodeRequest:
        if result is None:  # recompute on the decoder: the client's own request
            return DecodeRequest(req.path, req.body, req.stream)
        extra = result.extra
        converter = AnswerConverter(req, extra["first_text"], len(extra["tokens"]))
        if extra["finish_reason"] == "stop":  # EOS or a stop string: nothing to continue
            return DecodeRequest(
                "", b"", req.stream, answer=first_token_answer(converter, req.stream, "stop")
            )
        body = decode_body(req, extra["tokens"], extra["first_tok"])
        return DecodeRequest(
            "/v1/completions",
            orjson.dumps(body),
            req.stream,
            transform_stream=converter.stream,
            transform_body=converter.body,
        )
