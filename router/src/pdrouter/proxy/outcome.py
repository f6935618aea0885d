"""What a proxy hands back to the API layer: a complete body or a stream to relay."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pdrouter.proxy.errors import RouterError
    from pdrouter.proxy.relay import ClientWriter


class PushStream(Protocol):
    """A stream that writes itself to the client (relay.PushRelay, or a trace watching one)."""

    async def run(self, writer: ClientWriter) -> RouterError | None: ...


@dataclass(slots=True)
class BodyOutcome:
    status: int
    body: bytes
    content_type: str | None = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class StreamOutcome:
    """`chunks` relays through the task; `push`, when set, is the same stream as a PushRelay,
    which the API layer runs instead when it can write to the client connection directly."""

    chunks: AsyncIterator[bytes]
    on_abort: Callable[[], None] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    push: PushStream | None = None


Outcome = BodyOutcome | StreamOutcome
