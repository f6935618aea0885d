"""What a proxy hands back to the API layer: a complete body or a stream to relay."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class BodyOutcome:
    status: int
    body: bytes
    content_type: str | None = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class StreamOutcome:
    chunks: AsyncIterator[bytes]
    on_abort: Callable[[], None] | None = None
    headers: dict[str, str] = field(default_factory=dict)


Outcome = BodyOutcome | StreamOutcome
