"""The KV-transfer strategy interface. The orchestrator never asks which protocol it runs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pdrouter.proxy.context import ClientRequest
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
    """The decode leg: where to send what, and how to turn the answer into the client's shape."""

    path: str
    body: bytes
    stream: bool
    transform_stream: ChunkTransform | None = None
    transform_body: Callable[[bytes], bytes] | None = None


class KvTransport(Protocol):
    """One KV-transfer protocol: how the prefill leg runs and how the decode leg is built."""

    name: str
    # Whether a decode that failed to start may be re-sent to another decoder (the KV can
    # still be read by anyone, e.g. NIXL pulls; not when it was pushed to one decoder).
    decode_retryable: bool
    # Whether the decoder must be fixed before the prefill starts (the prefill names it).
    decoder_bound_at_prefill: bool

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
