"""The FastAPI application: lifespan wiring, control routes, and the OpenAI hot routes."""

from __future__ import annotations

import gc
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from pdrouter import __version__
from pdrouter.api.admission import AdmissionGate, AdmissionLimits
from pdrouter.api.http_protocol import EDGE_STATE_KEY, EdgeLimits
from pdrouter.api.openai_endpoint import Handler, OpenAIEndpoint
from pdrouter.api.openapi import add_generation_routes
from pdrouter.api.passthrough import PASSTHROUGH_ROUTES, PassThroughValidator
from pdrouter.api.shutdown import GracefulShutdown
from pdrouter.api.state import AppState, build_state, on_endpoints
from pdrouter.config import RouterSettings, RoutingLogic
from pdrouter.discovery.base import Discovery
from pdrouter.proxy.errors import RouterError
from pdrouter.proxy.responses import Receive, Scope, Send, send_error
from pdrouter.scheduling.framework import Profile
from pdrouter.scheduling.scorers.prefix import PrefixMemory
from pdrouter.stats.router_metrics import RouterMetrics


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status, headers, media_type="application/json")


def _build_pd(state: AppState) -> tuple[Handler, list[Any]]:
    from pdrouter.pd.orchestrator import PdOrchestrator
    from pdrouter.pd.transports import build_transport

    transport = build_transport(state.settings, state.client)
    kv = state.kv
    orchestrator = PdOrchestrator(
        state.settings,
        state.pool,
        state.client,
        state.metrics,
        transport,
        kv.prompt if kv else None,
        kv.index if kv else None,
    )
    return orchestrator.handle, [transport]


def create_app(
    settings: RouterSettings,
    discovery: Discovery | None = None,
    control_socket: str | None = None,
    serve_signals: bool = False,
) -> HotPathDispatch:
    """Build the app. `discovery` lets tests inject their own engine source; `control_socket`
    makes this app one worker of several (see pdrouter.workers); `serve_signals` (the CLI)
    drains on SIGTERM (see api/shutdown.py) and freezes what start-up built out of the cycle
    collector's reach."""
    state = build_state(settings, discovery, control_socket)
    registry = state.metrics.exposition_registry()
    pd = settings.routing_logic is RoutingLogic.DISAGG_PREFILL
    handler: Handler = state.aggregated.handle
    lifecycle: list[Any] = []
    if pd:
        handler, lifecycle = _build_pd(state)
    if state.kv is not None and state.kv.subscriber is not None:
        lifecycle.append(state.kv.subscriber)
    logic = state.aggregated.logic
    needs_prompt = pd or (isinstance(logic, Profile) and logic.uses(PrefixMemory))

    workers = settings.workers if control_socket is not None else 1
    gate = AdmissionGate(
        AdmissionLimits.share(
            settings.max_concurrent_requests,
            settings.max_queued_requests,
            settings.queue_timeout,
            settings.max_inflight_body_bytes,
            workers,
        )
    )
    shutdown = GracefulShutdown(settings.drain_delay, settings.shutdown_grace_period)
    shutdown.cut_hooks += [state.client.abort_all, gate.close]
    edge = EdgeLimits(
        settings.request_header_timeout,
        settings.request_body_timeout,
        lambda reason: state.metrics.rejected.labels(reason).inc(),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        await state.client.start()
        for part in lifecycle:
            await part.start()
        await state.discovery.start(on_endpoints(state))  # type: ignore[arg-type]
        if state.scrape:
            await state.scraper.start()
        if serve_signals:  # the process is this server (the CLI), not a test's app
            shutdown.install()
            # What start-up built lives as long as the process: leave it out of the cycle
            # collector's full passes (one took 64 ms over ~72k such objects, streams paused).
            gc.collect()
            gc.freeze()
        try:
            yield {EDGE_STATE_KEY: edge}  # read by the HTTP protocol (http_protocol.py)
        finally:
            shutdown.close()
            if state.scrape:
                await state.scraper.stop()
            await state.discovery.stop()
            for part in reversed(lifecycle):
                await part.stop()
            await state.client.close()
            if state.tracing is not None:
                await state.tracing.close()

    app = FastAPI(
        title="pdstack router",
        version=__version__,
        description="OpenAI-compatible router for prefill/decode disaggregated vLLM.",
        lifespan=lifespan,
    )
    app.state.pdstack = state

    def endpoint(api: str, **passthrough: Any) -> OpenAIEndpoint:
        return OpenAIEndpoint(
            api,
            state.aggregated.handle if passthrough else handler,
            state.metrics,
            state.auth,
            settings.max_body_bytes,
            settings.session_key,
            needs_prompt and not passthrough,
            settings.log_requests,
            settings.log_bodies,
            tracer=state.tracing.tracer if state.tracing is not None else None,
            **passthrough,
        )

    hot = {"/v1/completions": endpoint("completions"), "/v1/chat/completions": endpoint("chat")}
    check_passthrough = PassThroughValidator(state.pool)
    for path, api in PASSTHROUGH_ROUTES.items():
        hot[path] = endpoint(api, path=path, validate=check_passthrough)
    for path, asgi in hot.items():  # also routed by FastAPI, e.g. for other methods' 405
        app.router.routes.append(Route(path, asgi, methods=["POST"]))

    @app.api_route(
        "/health", methods=["GET", "HEAD"], summary="Liveness: the router process is serving."
    )
    async def health() -> Response:
        return _json({"status": "ok"})

    @app.api_route(
        "/ready",
        methods=["GET", "HEAD"],
        summary="Readiness: every served model has a healthy path.",
    )
    async def ready() -> Response:
        if shutdown.draining:
            return _json({"ready": False, "detail": "shutting down"}, 503, {"retry-after": "1"})
        models = state.pool.models()
        report = {}
        all_ok = bool(models)
        for model in models:
            ok, why = state.model_ready(model)
            report[model] = {"ready": ok, "detail": why}
            all_ok &= ok
        body = {"ready": all_ok, "models": report}
        if not models:
            body["detail"] = "no engines discovered"
        return _json(body, 200 if all_ok else 503, None if all_ok else {"retry-after": "1"})

    @app.api_route(
        "/v1/models", methods=["GET", "HEAD"], summary="Models with at least one ready engine."
    )
    async def models() -> Response:
        created = int(time.time())
        data = [
            {"id": m, "object": "model", "created": created, "owned_by": "pdstack"}
            for m in state.pool.models()
            if state.model_ready(m)[0]
        ]
        return _json({"object": "list", "data": data})

    def admin_denied(request: Request) -> Response | None:
        if not state.admin_auth.enabled:
            return None
        try:
            state.admin_auth.check(request.headers.get("authorization", "").encode("latin-1"))
        except RouterError as err:
            return Response(err.body(), err.status, err.headers(), media_type="application/json")
        return None

    @app.get("/metrics", summary="The router's own Prometheus metrics.")
    async def metrics(request: Request) -> Response:
        denied = admin_denied(request)
        if denied is not None:
            return denied
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/engines", summary="What the router knows about each engine.")
    async def engines(request: Request) -> Response:
        denied = admin_denied(request)
        if denied is not None:
            return denied
        now = time.monotonic()
        rows = []
        for s in state.pool.all():
            view = s.view(now)
            snap = s.requests.snapshot(now, s.in_flight)  # this worker's latency windows
            rows.append(
                {
                    "id": s.id,
                    "url": s.endpoint.url,
                    "model": s.endpoint.model,
                    "role": s.endpoint.role.value,
                    "healthy": view.healthy,
                    "breaker": view.breaker.name.lower(),
                    "in_flight": view.in_flight,
                    "recent_failures": view.recent_failures,
                    "load_source": view.load_source,
                    "waiting": view.metrics.waiting,
                    "running": view.metrics.running,
                    "kv_cache_usage": view.metrics.kv_cache_usage,
                    "qps": view.qps,
                    "ttft": snap.ttft,
                    "itl": snap.itl,
                    "latency": snap.latency,
                    "last_error": view.last_error,
                }
            )
        return _json(
            {
                "engines": rows,
                "routing_logic": settings.routing_logic.value,
                "kv_transport": settings.kv_transport.value if pd else None,
            }
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _json(
            {
                "error": {
                    "message": f"{exc.detail}: {request.method} {request.url.path}",
                    "type": "invalid_request_error",
                    "code": code,
                    "param": None,
                }
            },
            exc.status_code,
            dict(exc.headers or {}),
        )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = add_generation_routes(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                ),
                PASSTHROUGH_ROUTES,
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return HotPathDispatch(app, hot, settings.max_header_bytes, gate, state.metrics)


class HotPathDispatch:
    """Sends the generation routes straight to their endpoints, skipping FastAPI's middleware
    stack (about a tenth of the router's CPU per request), through admission control;
    everything else goes to FastAPI."""

    def __init__(
        self,
        app: FastAPI,
        hot: dict[str, OpenAIEndpoint],
        max_header_bytes: int,
        gate: AdmissionGate,
        metrics: RouterMetrics,
    ) -> None:
        self.app = app
        self.hot = hot
        self.max_header_bytes = max_header_bytes
        self.gate = gate
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = b""
        if scope["type"] == "http":
            size = 0
            for key, value in scope["headers"]:
                size += len(key) + len(value)
                if key == b"content-length":
                    declared = value
            if size > self.max_header_bytes:
                await send_error(
                    send,
                    RouterError(
                        431,
                        f"request headers exceed the limit of {self.max_header_bytes} bytes",
                        type="invalid_request_error",
                        code="headers_too_large",
                    ),
                )
                return
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self.hot.get(scope["path"])
            if endpoint is not None:
                await self._admitted(endpoint, declared, scope, receive, send)
                return
        await self.app(scope, receive, send)  # type: ignore[arg-type]

    async def _admitted(
        self, endpoint: OpenAIEndpoint, declared: bytes, scope: Scope, receive: Receive, send: Send
    ) -> None:
        limit = endpoint.max_body_bytes
        try:
            size = int(declared) if declared else limit
        except ValueError:
            size = limit
        if size > limit or size < 0:  # the endpoint answers 413 / 400 without reading it
            await endpoint(scope, receive, send)
            return
        gate = self.gate
        if not gate.try_enter(size):
            try:
                await gate.enter(size)
            except RouterError as err:
                self.metrics.rejected.labels(err.code).inc()
                self.metrics.errors.labels(err.code, err.phase or "admission").inc()
                await send_error(send, err)
                return
        try:
            await endpoint(scope, receive, send)
        finally:
            gate.leave(size)
