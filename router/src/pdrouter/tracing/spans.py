"""The spans of one traced request. Imported only when tracing is on.

    POST /v1/chat/completions   SERVER    the request as its client saw it
      schedule                  INTERNAL  decision, candidates, chosen engines, reason
      prefill                   CLIENT    one per attempt; vLLM's own span is its child
      kv_handoff                INTERNAL  from the prefill's KV parameters to the decode request
      decode                    CLIENT    dispatch to end of stream; vLLM's own span is its child

An aggregated request (or a PD request sent to one engine) has one `generate` CLIENT span per
attempt instead of the three PD phases. Attribute names follow the OpenTelemetry GenAI and HTTP
semantic conventions; what they have no name for is `pdstack.*`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry.context import Context
from opentelemetry.trace import (
    Span,
    SpanKind,
    Status,
    StatusCode,
    Tracer,
    set_span_in_context,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from pdrouter.stats.engine_state import EngineState
from pdrouter.tracing.answer import answer_attributes
from pdrouter.tracing.logs import current_trace_id

if TYPE_CHECKING:
    from pdrouter.proxy.context import ClientRequest
    from pdrouter.proxy.errors import RouterError
    from pdrouter.proxy.outcome import PushStream
    from pdrouter.proxy.relay import ClientWriter

_W3C = ("traceparent", "tracestate")
_NO_PARENT = Context()
_PROPAGATOR = TraceContextTextMapPropagator()
OPERATION = {"chat": "chat", "completions": "text_completion"}
# Every attribute costs CPU twice (set, then OTLP-encoded in the export thread: ~5 us each here),
# so a span carries what it alone can say; what the request span says is not repeated on legs.
_ENGINE_CACHE_MAX = 1024
_LEG_SPAN = {"prefill": "prefill", "decode": "decode", "aggregated": "generate"}
# Request fields with a GenAI attribute name (max_completion_tokens is chat's newer max_tokens).
_REQUEST_FIELDS = (
    ("max_tokens", "gen_ai.request.max_tokens", int),
    ("max_completion_tokens", "gen_ai.request.max_tokens", int),
    ("temperature", "gen_ai.request.temperature", float),
    ("top_p", "gen_ai.request.top_p", float),
    ("top_k", "gen_ai.request.top_k", int),
    ("seed", "gen_ai.request.seed", int),
)


def engine_attributes(engine: EngineState) -> dict[str, Any]:
    """Which engine a leg ran on: server.* (GenAI), plus the router's name for it when that says
    more than host:port (a pod name)."""
    url = urlsplit(engine.endpoint.url)
    attrs: dict[str, Any] = {}
    if url.hostname:
        attrs["server.address"] = url.hostname
    if url.port:
        attrs["server.port"] = url.port
    name = engine.endpoint.display_name
    if name not in (engine.endpoint.url, url.netloc):
        attrs["pdstack.engine"] = name
    return attrs


def request_attributes(
    api: str, model: str, stream: bool, payload: dict[str, Any]
) -> dict[str, Any]:
    """GenAI request attributes of a client's body (only the fields it set, with sane types)."""
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": OPERATION.get(api, api),
        "gen_ai.request.model": model,
        "gen_ai.request.stream": stream,
    }
    for field, name, kind in _REQUEST_FIELDS:
        value = payload.get(field)
        if isinstance(value, int | float) and not isinstance(value, bool):
            attrs[name] = kind(value)
    n = payload.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n != 1:
        attrs["gen_ai.request.choice.count"] = n
    return attrs


def _wall_ns(monotonic: float) -> int:
    """A time.monotonic() instant as epoch nanoseconds, the clock spans are stamped with."""
    return time.time_ns() - int((time.monotonic() - monotonic) * 1e9)


class RequestTracer:
    """Starts the trace of each request: continues the client's W3C context or starts one."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer
        self._engines: dict[tuple[str, str], dict[str, Any]] = {}

    def engine(self, engine: EngineState) -> dict[str, Any]:
        """engine_attributes(), computed once per engine (the cache forgets all when full)."""
        key = (engine.endpoint.id, engine.endpoint.url)
        attrs = self._engines.get(key)
        if attrs is None:
            if len(self._engines) >= _ENGINE_CACHE_MAX:
                self._engines.clear()
            attrs = self._engines[key] = engine_attributes(engine)
        return attrs

    def start(self, req: ClientRequest) -> None:
        """Open the request's span, continuing the client's W3C context if it sent one.

        Sets `req.trace` (None when the sampler dropped the request), the trace id for log
        lines, and our context in place of the client's in the headers sent to engines.
        """
        forward = req.forward_headers
        carrier = {k: forward[k] for k in _W3C if k in forward}
        attributes = request_attributes(req.api, req.model, req.stream, req.payload)
        root = self._tracer.start_span(
            f"POST {req.path}",
            context=_PROPAGATOR.extract(carrier) if carrier else _NO_PARENT,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": "POST", "http.route": req.path, **attributes},
            start_time=_wall_ns(req.arrived),
        )
        root.set_attribute("pdstack.request.id", req.request_id)  # the id engines are sent
        if req.client_request_id:
            root.set_attribute("pdstack.client_request.id", req.client_request_id)
        current_trace_id.set(format(root.get_span_context().trace_id, "032x"))
        forward.pop("tracestate", None)
        _PROPAGATOR.inject(forward, context=set_span_in_context(root))
        if root.is_recording():  # else engines see the unsampled flag and drop their spans too
            req.trace = RequestTrace(self, root, attributes["gen_ai.operation.name"], req.arrived)


class RequestTrace:
    """Open spans of one request; every method is a few attribute sets, never I/O."""

    __slots__ = (
        "_arrived",
        "_chunks",
        "_first",
        "_first_ns",
        "_gen_ai",
        "_handoff",
        "_last",
        "_leg",
        "_leg_started",
        "_leg_status",
        "_owner",
        "_prefill_end_ns",
        "_prev",
        "_prev2",
        "_root",
        "_root_ctx",
        "_status",
        "_tracer",
    )

    def __init__(self, tracer: RequestTracer, root: Span, operation: str, arrived: float) -> None:
        self._owner = tracer
        self._tracer = tracer._tracer
        self._root = root
        self._root_ctx = set_span_in_context(root)
        # GenAI requires both on an inference (leg) span; the model is on the request span.
        self._gen_ai = {"gen_ai.operation.name": operation, "gen_ai.provider.name": "vllm"}
        self._arrived = arrived
        self._leg: Span | None = None
        self._leg_started = 0
        self._leg_status = 0
        self._handoff: Span | None = None
        self._prefill_end_ns = 0
        self._first = self._prev2 = self._prev = self._last = b""
        self._first_ns = 0
        self._chunks = 0
        self._status = 0

    # --- scheduling -----------------------------------------------------------------------
    def scheduled(
        self,
        decision: str,
        reason: str,
        candidates: dict[str, Sequence[EngineState]],
        chosen: dict[str, EngineState | None],
    ) -> None:
        """Record a scheduling decision (a span that ends at once: planning does no I/O)."""
        attrs: dict[str, Any] = {"pdstack.schedule.decision": decision}
        if reason:
            attrs["pdstack.schedule.reason"] = reason
        for role, engines in candidates.items():
            attrs[f"pdstack.schedule.{role}_candidates"] = [
                s.endpoint.display_name for s in engines
            ]
        for role, engine in chosen.items():
            if engine is not None:
                attrs[f"pdstack.schedule.{role}_engine"] = engine.endpoint.display_name
        self._tracer.start_span("schedule", self._root_ctx, attributes=attrs).end()

    # --- engine legs ----------------------------------------------------------------------
    def open_leg(self, phase: str, engine: EngineState, attempt: int | None = None) -> None:
        """Start the span of one call to an engine; it becomes the parent the engine sees."""
        self._end_handoff()
        attrs = {**self._gen_ai, **self._owner.engine(engine)}
        if attempt is not None:
            attrs["pdstack.attempt"] = attempt + 1
        self._leg = self._tracer.start_span(
            _LEG_SPAN.get(phase, phase), self._root_ctx, kind=SpanKind.CLIENT, attributes=attrs
        )
        self._leg_started = time.time_ns()
        self._leg_status = 0

    def inject(self, headers: dict[str, str]) -> None:
        """Our W3C context for an engine request: the open leg's, else the request's."""
        leg = self._leg
        _PROPAGATOR.inject(headers, context=set_span_in_context(leg) if leg else self._root_ctx)

    def leg_status(self, status: int) -> None:
        """The engine's HTTP status for the open leg."""
        self._leg_status = status
        if self._leg is not None:
            self._leg.set_attribute("http.response.status_code", status)

    def fail_leg(self, message: str, timeout: bool = False) -> None:
        """The open leg failed; the request may go on with another engine."""
        if self._leg is None:
            return
        kind = "timeout" if timeout else str(self._leg_status) if self._leg_status >= 400 else ""
        _fail(self._leg, kind or "engine_error", message)
        self._leg.end()
        self._leg = None

    def prefill_done(self, kv_params: dict[str, Any] | None, cached_tokens: int | None) -> None:
        """The prefill leg succeeded; what it handed over opens the KV hand-off."""
        leg = self._leg
        if leg is not None:
            if cached_tokens is not None:
                leg.set_attribute("gen_ai.usage.cache_read.input_tokens", cached_tokens)
            leg.end()
            self._leg = None
        self._prefill_end_ns = time.time_ns()
        attrs: dict[str, Any] = {"pdstack.kv.params": kv_params is not None}
        if kv_params:
            if isinstance(kv_params.get("remote_engine_id"), str):
                attrs["pdstack.kv.remote_engine_id"] = kv_params["remote_engine_id"]
            blocks = kv_params.get("remote_block_ids")
            if isinstance(blocks, list):
                attrs["pdstack.kv.remote_blocks"] = len(blocks)
        self._handoff = self._tracer.start_span(
            "kv_handoff", self._root_ctx, attributes=attrs, start_time=self._prefill_end_ns
        )

    def handoff_to(self, transport: str) -> None:
        """Name the KV transport of the hand-off (it ends when the decode leg opens)."""
        if self._handoff is not None:
            self._handoff.set_attribute("pdstack.kv.transport", transport)

    # --- the answer -------------------------------------------------------------------------
    async def watch(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """Relay a stream unchanged, keeping its first and last chunks for end()."""
        self._status = 200
        try:
            async for chunk in chunks:
                self.seen(chunk)
                yield chunk
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    def watch_push(self, push: PushStream) -> PushStream:
        """The same for a stream the push relay writes to the client from the socket callback."""
        self._status = 200
        return _WatchedPush(push, self)

    def seen(self, chunk: bytes) -> None:
        """One chunk of the answer on its way to the client."""
        if not self._chunks:
            self._first = chunk
            self._first_ns = time.time_ns()
        self._chunks += 1
        self._prev2, self._prev, self._last = self._prev, self._last, chunk

    def body(self, status: int, body: bytes) -> None:
        """A complete (non-streamed) answer."""
        self._first = self._last = body
        self._status = status
        self.leg_status(status)

    def end(self, outcome: str, error: RouterError | None) -> None:
        """End every open span: outcome ok, client_error, error or cancelled (client gone);
        `error` is what the client was told, in the HTTP status or a final SSE event."""
        self._end_handoff()
        root: dict[str, Any] = {"pdstack.outcome": outcome}
        if self._first_ns:  # what the client saw: from its request's arrival
            root["gen_ai.response.time_to_first_chunk"] = (
                self._first_ns - _wall_ns(self._arrived)
            ) / 1e9
        status = self._status or (error.status if error is not None else 0)
        if status:
            root["http.response.status_code"] = status
        if error is not None:
            root["error.type"] = error.code
            if error.pd:
                root["pdstack.pd.error_reason"] = error.code
                root["pdstack.pd.error_phase"] = error.phase
        leg = self._leg
        answer = answer_attributes(self._first, self._prev2 + self._prev + self._last)
        if leg is not None:  # the answer came from this leg: it carries what was in it
            if self._chunks:
                answer["pdstack.stream.chunks"] = self._chunks
            if self._first_ns:
                answer["gen_ai.response.time_to_first_chunk"] = (
                    self._first_ns - self._leg_started
                ) / 1e9
            if outcome != "ok":
                answer["pdstack.outcome"] = outcome
            leg.set_attributes(answer)
            if error is not None:
                _fail(leg, error.code, error.message)
            leg.end()
            self._leg = None
        else:
            root.update(answer)
        span = self._root
        span.set_attributes(root)
        # HTTP server spans: a 4xx is the client's problem, not the server's error.
        if error is not None and error.status >= 500:
            span.set_status(Status(StatusCode.ERROR, error.message))
        span.end()

    # --- internals --------------------------------------------------------------------------
    def _end_handoff(self) -> None:
        if self._handoff is not None:
            self._handoff.end()
            self._handoff = None


class _WatchedPush:
    """A push stream whose writes to the client pass the trace on the way."""

    __slots__ = ("_push", "_trace")

    def __init__(self, push: PushStream, trace: RequestTrace) -> None:
        self._push = push
        self._trace = trace

    async def run(self, writer: ClientWriter) -> RouterError | None:
        return await self._push.run(_WatchedWriter(writer, self._trace))


class _WatchedWriter:
    """ClientWriter that shows every write to the trace first."""

    __slots__ = ("_trace", "_writer")

    def __init__(self, writer: ClientWriter, trace: RequestTrace) -> None:
        self._writer = writer
        self._trace = trace

    def write(self, data: bytes) -> None:
        self._trace.seen(data)
        self._writer.write(data)

    def paused(self) -> bool:
        return self._writer.paused()

    async def drain(self) -> None:
        await self._writer.drain()


def _fail(span: Span, kind: str, message: str) -> None:
    span.set_attribute("error.type", kind)
    span.set_status(Status(StatusCode.ERROR, message))
