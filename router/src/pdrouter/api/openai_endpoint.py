"""The hot path: POST /v1/completions and /v1/chat/completions as a plain ASGI endpoint.

It bypasses FastAPI's request parsing on purpose: the body is read once, parsed once with orjson,
and forwarded as the client's own bytes.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pdrouter.api.auth import ApiKeyCheck
from pdrouter.api.validation import (
    parse_body,
    payload_too_large,
    prompt_text,
    validate_payload,
)
from pdrouter.proxy.context import ClientRequest
from pdrouter.proxy.errors import RouterError
from pdrouter.proxy.outcome import BodyOutcome, Outcome
from pdrouter.proxy.responses import (
    DisconnectWatcher,
    Receive,
    Scope,
    Send,
    send_body,
    send_error,
    send_stream,
)
from pdrouter.scheduling.request import RequestFeatures
from pdrouter.stats.router_metrics import UNKNOWN_MODEL, RouterMetrics

if TYPE_CHECKING:
    from pdrouter.tracing.spans import RequestTracer

log = logging.getLogger("pdrouter.access")

Handler = Callable[[ClientRequest], Awaitable[Outcome]]
# (api, payload) -> (model, stream); raises RouterError for a request the router refuses.
Validator = Callable[[str, dict[str, Any]], tuple[str, bool]]
_FORWARDED = (b"authorization", b"traceparent", b"tracestate")
_JSON_TYPES = (b"application/json", b"application/x-ndjson")


# Engine request ids: a random per-process prefix and a counter, unique across router replicas
# and restarts, and far cheaper than a uuid4 per request. Engines key a request's state on its
# id (vLLM's scheduler, NIXL's KV hand-off), so a client's X-Request-Id, which need not be
# unique, is echoed and logged but never sent to an engine.
_ID_PREFIX = uuid.uuid4().hex[:16]
_ids = itertools.count(1)


def _engine_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ids):016x}"


def _client_request_id(value: bytes | None) -> str | None:
    if value and len(value) <= 128 and value.isascii() and value.decode().isprintable():
        return value.decode()
    return None


class ClientGone(Exception):
    """The client hung up before its request body arrived."""


class OpenAIEndpoint:
    """ASGI app for one OpenAI generation API (completions or chat)."""

    def __init__(
        self,
        api: str,
        handler: Handler,
        metrics: RouterMetrics,
        auth: ApiKeyCheck,
        max_body_bytes: int,
        session_key: str,
        needs_prompt: bool,
        log_requests: bool,
        log_bodies: bool,
        path: str | None = None,
        validate: Validator = validate_payload,
        tracer: RequestTracer | None = None,
    ) -> None:
        self.api = api
        self.path = path or ("/v1/chat/completions" if api == "chat" else "/v1/completions")
        self.validate = validate
        # Latency histograms describe generation; a /tokenize call would only blur them.
        self.generation = api in ("completions", "chat")
        self.handler = handler
        self.metrics = metrics
        self.auth = auth
        self.max_body_bytes = max_body_bytes
        self.session_header = session_key.lower().encode()
        self.session_field = session_key
        self.needs_prompt = needs_prompt
        self.log_requests = log_requests
        self.log_bodies = log_bodies
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        arrived = time.monotonic()
        headers: dict[bytes, bytes] = {}
        for key, value in scope["headers"]:
            headers[key] = value
        request_id = _engine_request_id()
        client_id = _client_request_id(headers.get(b"x-request-id"))
        reply_headers = {"x-request-id": client_id or request_id}
        model = UNKNOWN_MODEL
        try:
            forward = self._forward_headers(headers)
            body = await self._read_body(headers, receive)
            payload = parse_body(body)
            model, stream = self.validate(self.api, payload)
        except RouterError as err:
            self._count_error(model, err)
            await send_error(send, err, reply_headers)
            return
        except ClientGone:  # nothing to answer, nothing reached an engine: counted, no trace
            self.metrics.requests.labels(UNKNOWN_MODEL, self.api, "cancelled").inc()
            log.info("request %s: client hung up while sending its body", request_id)
            return
        if self.log_bodies:
            log.debug("request %s body: %s", request_id, body[:4096].decode("utf-8", "replace"))

        opts = payload.get("stream_options")
        req = ClientRequest(
            api=self.api,
            path=self.path,
            body=body,
            payload=payload,
            model=model,
            stream=stream,
            request_id=request_id,
            client_request_id=client_id,
            forward_headers=forward,
            features=RequestFeatures(
                model=model,
                session=self._session(headers, payload),
                prompt=prompt_text(self.api, payload) if self.needs_prompt else "",
            ),
            arrived=arrived,
            include_usage=bool(isinstance(opts, dict) and opts.get("include_usage")),
        )
        if self.tracer is not None:
            self.tracer.start(req)
        await self._run(req, send, receive, reply_headers)

    async def _run(
        self, req: ClientRequest, send: Send, receive: Receive, reply_headers: dict[str, str]
    ) -> None:
        watcher = DisconnectWatcher(receive)
        task = asyncio.current_task()
        try:
            outcome = await self.handler(req)
        except RouterError as err:
            watcher.close()
            self._count_error(req.model, err)
            self._finish(req, "error", err)
            await send_error(send, err, reply_headers)
            return
        except asyncio.CancelledError:
            if watcher.disconnected and task is not None:
                task.uncancel()
                self._finish(req, "cancelled", None)
                return
            raise
        except Exception:
            watcher.close()
            log.exception("request %s: unexpected router error", req.request_id)
            internal = RouterError(500, "internal router error", code="internal_error")
            self._count_error(req.model, internal)
            self._finish(req, "error", internal)
            await send_error(send, internal, reply_headers)
            return

        if isinstance(outcome, BodyOutcome):
            watcher.close()
            if req.trace is not None:
                req.trace.body(outcome.status, outcome.body)
            headers = {**outcome.headers, **reply_headers}
            ctype = (b"content-type", (outcome.content_type or "application/json").encode())
            ok = outcome.status < 400
            self._finish(req, "ok" if ok else "client_error", None)
            if ok and self.generation:
                label = self.metrics.model_label(req.model)
                self.metrics.e2e.labels(label).observe(time.monotonic() - req.arrived)
            await send_body(send, outcome.status, outcome.body, headers, ctype)
            return

        def on_end(result: str, error: RouterError | None) -> None:
            watcher.close()
            if error is not None:
                self._count_error(req.model, error)
            elif result == "ok":
                label = self.metrics.model_label(req.model)
                self.metrics.e2e.labels(label).observe(time.monotonic() - req.arrived)
            self._finish(req, result, error)

        if req.trace is not None:  # the trace keeps the stream's first and last chunks
            outcome.chunks = req.trace.watch(outcome.chunks)
            if outcome.push is not None:
                outcome.push = req.trace.watch_push(outcome.push)
        try:
            await send_stream(
                send,
                outcome.chunks,
                {**outcome.headers, **reply_headers},
                on_end,
                before_end=watcher.close,
                push=outcome.push,
            )
        except asyncio.CancelledError:
            if outcome.on_abort is not None:
                outcome.on_abort()
            await _aclose(outcome.chunks)
            if watcher.disconnected and task is not None:
                task.uncancel()
                return
            raise
        except OSError:  # the client's socket broke while we wrote to it
            await _aclose(outcome.chunks)

    def _forward_headers(self, headers: dict[bytes, bytes]) -> dict[str, str]:
        forward = {k.decode(): headers[k].decode("latin-1") for k in _FORWARDED if k in headers}
        engine_auth = self.auth.check(headers.get(b"authorization"))
        if engine_auth is not None:
            forward["authorization"] = engine_auth
        elif self.auth.enabled:
            forward.pop("authorization", None)
        return forward

    async def _read_body(self, headers: dict[bytes, bytes], receive: Receive) -> bytes:
        ctype = headers.get(b"content-type", b"application/json").split(b";")[0].strip().lower()
        if ctype and ctype not in _JSON_TYPES and not ctype.endswith(b"+json"):
            raise RouterError(
                415,
                f"unsupported content type {ctype.decode('latin-1')!r}; send application/json",
                type="invalid_request_error",
                code="unsupported_media_type",
            )
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                if int(declared) > self.max_body_bytes:
                    raise payload_too_large(self.max_body_bytes)
            except ValueError:
                raise RouterError(
                    400,
                    "invalid content-length",
                    type="invalid_request_error",
                    code="invalid_request",
                ) from None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise payload_too_large(self.max_body_bytes)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _session(self, headers: dict[bytes, bytes], payload: dict[str, Any]) -> str | None:
        value = headers.get(self.session_header)
        if value:
            return value.decode("latin-1")
        field = payload.get(self.session_field)
        return field if isinstance(field, str) and field else None

    def _count_error(self, model: str, err: RouterError) -> None:
        self.metrics.errors.labels(err.code, err.phase or "router").inc()

    def _finish(self, req: ClientRequest, outcome: str, err: RouterError | None) -> None:
        self.metrics.requests.labels(self.metrics.model_label(req.model), self.api, outcome).inc()
        if req.trace is not None:
            req.trace.end(outcome, err)
        client = f" client_id={req.client_request_id}" if req.client_request_id else ""
        if outcome == "error" and err is not None:
            log.warning(
                "request %s%s model=%s failed: %s %s (%s)",
                req.request_id,
                client,
                req.model,
                err.status,
                err.code,
                err.detail,
            )
        elif self.log_requests:
            latency_ms = round((time.monotonic() - req.arrived) * 1000, 1)
            fields = {
                "request_id": req.request_id,
                "model": req.model,
                "api": self.api,
                "stream": req.stream,
                "outcome": outcome,
                "latency_ms": latency_ms,
            }
            log.info(
                "request %s%s model=%s api=%s stream=%s outcome=%s latency_ms=%.1f",
                req.request_id,
                client,
                req.model,
                self.api,
                req.stream,
                outcome,
                latency_ms,
                extra={"fields": fields},  # separate keys in JSON access logs
            )


async def _aclose(chunks: Any) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:
            log.debug("closing an aborted stream failed", exc_info=True)
