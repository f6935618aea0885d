"""The validated client request as the proxy sees it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pdrouter.scheduling.request import RequestFeatures

if TYPE_CHECKING:
    from pdrouter.tracing.spans import RequestTrace


@dataclass(slots=True)
class ClientRequest:
    """One accepted OpenAI request. `body` is the client's bytes, forwarded unchanged where
    routing does not need to rewrite it; `payload` is the parsed JSON object."""

    api: str  # "completions" or "chat"
    path: str  # upstream path, e.g. /v1/chat/completions
    body: bytes
    payload: dict[str, Any]
    model: str
    stream: bool
    request_id: str  # the router's id, sent to engines (X-Request-Id) and logged
    forward_headers: dict[str, str]
    features: RequestFeatures
    arrived: float
    include_usage: bool = False
    client_request_id: str | None = None  # the client's X-Request-Id: echoed and logged
    tags: dict[str, str] = field(default_factory=dict)
    trace: RequestTrace | None = None  # None unless tracing is on and sampled this request
