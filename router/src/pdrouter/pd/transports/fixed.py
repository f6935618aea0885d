"""production-stack's old fixed-peer LMCache mode: each prefiller pushes to one configured
decoder by itself, so the router only runs the prompt on the prefiller first (one token), then
sends the untouched request to the decoder. No parameters travel through the router."""

from __future__ import annotations

from pdrouter.pd.transports.base import (
    DecodeRequest,
    PrefillResult,
    PrefillSender,
    TransportDefaults,
)
from pdrouter.pd.transports.nixl import cached_tokens_of, prefill_payload
from pdrouter.proxy.context import ClientRequest
from pdrouter.stats.engine_state import EngineState


class FixedPeerTransport(TransportDefaults):
    name = "fixed"
    decode_retryable = True  # the decoder looks the KV up by content; any decoder may try
    decoder_bound_at_prefill = False

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def prefill(
        self,
        req: ClientRequest,
        prefill: EngineState,
        decode: EngineState,
        send: PrefillSender,
        deadline: float,
    ) -> PrefillResult:
        body = prefill_payload(req.payload)  # one token, no streaming, like the NIXL leg...
        del body["kv_transfer_params"]  # ...but the engines find each other by themselves
        response = await send(prefill, req.path, body, deadline)
        return PrefillResult(prefill, response, None, cached_tokens_of(response))

    def decode_request(
        self, req: ClientRequest, result: PrefillResult | None, decode: EngineState
    ) -> DecodeRequest:
        return DecodeRequest(req.path, req.body, req.stream)
