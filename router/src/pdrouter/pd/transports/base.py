"""The KV-transfer strategy interface. The orchestrator never asks which protocol it runs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pdrouter.proxy.context import ClientRequest
from pdrouter.proxy.outcome import Outcome
from pdrouter.stats.engine_state import EngineState

# (engine, path, json body, deadline seconds) -> parsed JSON response of a 2xx answer.
# Raises the orchestrator's typed leg errors; transports never talk HTTP themselves.
PrefillSender = Callable[[EngineState, str, dict[str, Any], float], Awaitable[dict[str, Any]]]
ChunkTransform = Callable[[AsyncIterator[bytes]], AsyncIterator[bytes]]


class MissingKvParams(Exception):
    """The prefill engine answered but gave the router nothing to hand to the decoder."""


class KvWaitTimeout(Exception):
    """The prefill engine never reported that the KV cache reached the decoder."""


@dataclass(slots=True)
class PrefillResult:
    """What the prefill leg produced, for the decode leg to use."""

    engine: EngineState
    response: dict[str, Any]
    kv_params: dict[str, Any] | None
    cached_tokens: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class DecodeRequest:
    """The decode leg: where to send what, and how to turn the answer into the client's shape.
    `answer` is set when the prefill leg already produced the whole answer (it stopped at its
    first token): the client gets it and no decoder is asked."""

    path: str
    body: bytes
    stream: bool
    transform_stream: ChunkTransform | None = None
    transform_body: Callable[[bytes], bytes] | None = None
    answer: Outcome | None = None


@dataclass(frozen=True, slots=True)
class Unsupported:
    """A request field the transport cannot honour when the request is disaggregated.

    `direct`: the whole request may run on the decode engine alone, which honours the field;
    otherwise the client gets a 400 naming `field`."""

    field: str
    reason: str
    direct: bool = True


class KvTransport(Protocol):
    """One KV-transfer protocol: how the prefill leg runs and how the decode leg is built."""

    name: str
    # Whether a decode that failed to start may be re-sent to another decoder (the KV can
    # still be read by anyone, e.g. NIXL pulls; not when it was pushed to one decoder).
    decode_retryable: bool
    # Whether the decoder must be fixed before the prefill starts (the prefill names it).
    decoder_bound_at_prefill: bool
    # Whether prefill engines accept nothing but this transport's own prefill leg: then no
    # other request (direct, fallback, retry, aggregated) is ever planned onto a prefill-role
    # engine, and engines of role "both" never prefill. LMCache: a PD sender's engine dies on a
    # generation request without `disagg_spec`.
    exclusive_prefill: bool
    # Whether `prefill` does nothing but `send` calls, each bounded by the deadline it is
    # given: then the orchestrator needs no outer timeout around it (one timer less a request).
    prefill_bounded: bool

    def unsupported(self, req: ClientRequest) -> Unsupported | None:
        """The first field of `req` this transport cannot honour disaggregated, if any."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def prefill(
        self,
        req: ClientRequest,
        prefill: EngineState,
        decode: EngineState,
        send: PrefillSender,
        deadline: float,
    ) -> PrefillResult: ...

    def decode_request(
        self, req: ClientRequest, result: PrefillResult | None, decode: EngineState
    ) -> DecodeRequest: ...


class TransportDefaults:
    """What most transports share: any request can be disaggregated, and prefill engines may
    serve plain requests too."""

    exclusive_prefill = False
    prefill_bounded = True

    def unsupported(self, req: ClientRequest) -> Unsupported | None:
        return None
