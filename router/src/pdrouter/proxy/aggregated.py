"""Aggregated serving: one engine runs the whole request."""

from __future__ import annotations

import logging
import time

from pdrouter.proxy.client import (
    EngineBrokenStream,
    EngineClient,
    EngineConnectError,
    EngineTimeout,
)
from pdrouter.proxy.context import ClientRequest
from pdrouter.proxy.errors import (
    BUSY_STATUSES,
    RouterError,
    engine_answer,
    no_engine,
    not_found_model,
    upstream_broken,
    upstream_failed,
    upstream_timeout,
    upstream_unreachable,
)
from pdrouter.proxy.outcome import BodyOutcome, Outcome, StreamOutcome
from pdrouter.proxy.prompt_kv import PromptKv
from pdrouter.proxy.tracking import EngineCall
from pdrouter.proxy.upstream import (
    engine_headers,
    error_detail,
    is_json_object,
    push_relay,
    relay_chunks,
)
from pdrouter.scheduling.logic import LeastLoaded, RoutingLogic
from pdrouter.stats.engine_state import EnginePool, EngineState
from pdrouter.stats.router_metrics import RouterMetrics

log = logging.getLogger(__name__)

# One retry on another engine when nothing reached the client (connect error or 5xx).
MAX_ATTEMPTS = 2


def serving_candidates(
    pool: EnginePool, model: str, exclusive_prefill: bool = False
) -> list[EngineState]:
    """Routable engines for a model; decode-capable ones first. With `exclusive_prefill` (the
    KV transport's prefill engines take nothing but its prefill leg) never a prefill engine."""
    engines = pool.for_model(model)
    if not engines:
        raise not_found_model(model)
    routable = [s for s in engines if s.routable]
    decoders = [s for s in routable if s.endpoint.role.can_decode]
    return decoders if exclusive_prefill else decoders or routable


class AggregatedProxy:
    """Picks an engine with the routing logic and relays its answer."""

    def __init__(
        self,
        pool: EnginePool,
        logic: RoutingLogic,
        client: EngineClient,
        metrics: RouterMetrics,
        kv: PromptKv | None = None,
        non_stream_timeout: float | None = None,
        exclusive_prefill: bool = False,
    ) -> None:
        self.pool = pool
        self.logic = logic
        self.kv = kv  # the logic scores KV-event prefixes: tokenize and hash the prompt first
        self.retry_logic = LeastLoaded()
        self.client = client
        self.metrics = metrics
        # vLLM sends a non-streamed answer's headers only with its last byte, so that answer
        # gets its own deadline rather than the first-byte one.
        self.non_stream_timeout = non_stream_timeout or client.first_byte_timeout
        self.exclusive_prefill = exclusive_prefill

    async def handle(self, req: ClientRequest) -> Outcome:
        candidates = serving_candidates(self.pool, req.model, self.exclusive_prefill)
        if self.kv is not None:
            req.features = await self.kv.features(req, candidates)
        tried: set[str] = set()
        last_error: RouterError | None = None
        for attempt in range(MAX_ATTEMPTS):
            pool = [s for s in candidates if s.id not in tried]
            if not pool:
                break
            # The routing logic chooses once; a retry takes the least loaded of the rest, so a
            # dead engine does not shift a round-robin cycle onto itself.
            logic = self.retry_logic if attempt else self.logic
            engine = logic.pick(pool, req.features)
            if self.kv is not None and not attempt:
                self.kv.predict(req.features, engine, pool)
            tried.add(engine.id)
            if req.trace is not None:
                reason = self.logic.name if not attempt else "retry_least_loaded"
                req.trace.scheduled("aggregated", reason, {"engine": pool}, {"engine": engine})
            if attempt:
                self.metrics.retries.labels("aggregated").inc()
            try:
                return await self.send(engine, req)
            except Retryable as exc:
                last_error = exc.error
                if req.trace is not None:
                    req.trace.fail_leg(exc.error.message)
                log.warning(
                    "request %s: engine %s failed before any byte (%s); %s",
                    req.request_id,
                    engine.endpoint.display_name,
                    exc.error.detail,
                    "retrying on another engine" if attempt + 1 < MAX_ATTEMPTS else "giving up",
                )
        if last_error is not None:
            raise last_error
        raise no_engine(req.model)

    async def send(self, engine: EngineState, req: ClientRequest) -> Outcome:
        """Run the request on one engine; raises Retryable if nothing reached the client."""
        call = EngineCall(engine, self.metrics, "aggregated")
        name = engine.endpoint.display_name
        deadline = self.client.first_byte_timeout if req.stream else self.non_stream_timeout
        if req.trace is not None:
            req.trace.open_leg("aggregated", engine)
        try:
            resp = await self.client.post(
                engine.endpoint.url + req.path,
                req.body,
                engine_headers(req.forward_headers, req.request_id, req.trace),
                first_byte_timeout=deadline,
            )
        except EngineConnectError as exc:
            call.close("error", engine_fault=True)
            raise Retryable(upstream_unreachable(name, str(exc))) from None
        except EngineTimeout as exc:
            call.close("error", engine_fault=True)
            raise upstream_timeout(name, exc.what) from None
        except EngineBrokenStream as exc:
            call.close("error", engine_fault=True)
            raise Retryable(upstream_unreachable(name, str(exc))) from None
        except BaseException:
            call.close("cancelled")
            raise

        if req.trace is not None:
            req.trace.leg_status(resp.status)
        try:
            if resp.status in BUSY_STATUSES:  # busy: another engine may take it
                raw = await resp.read(self.client.idle_timeout)
                call.close("error", engine_fault=resp.status >= 500)
                retry_after = resp.headers.get("retry-after")
                raise Retryable(engine_answer(resp.status, raw, retry_after, engine=name))
            if resp.status >= 500:
                detail = error_detail(await resp.read(self.client.idle_timeout))
                call.close("error", engine_fault=True)
                raise Retryable(upstream_failed(name, resp.status, detail))
            if resp.status >= 400 or not req.stream:
                remaining = deadline - (time.monotonic() - call.started)
                body = await resp.read(max(remaining, 1.0))
                ok = resp.status < 400
                if ok and not is_json_object(body):
                    call.close("error", engine_fault=True)
                    raise Retryable(upstream_failed(name, resp.status, "invalid JSON body"))
                call.close("ok" if ok else "client_error")
                return BodyOutcome(resp.status, body, resp.headers.get("content-type"))
        except (EngineTimeout, EngineBrokenStream) as exc:
            call.close("error", engine_fault=True)
            if isinstance(exc, EngineTimeout):
                raise upstream_timeout(name, exc.what) from None
            raise upstream_broken(name, str(exc)) from None
        except BaseException:
            call.close("cancelled")
            resp.release()
            raise
        return StreamOutcome(
            relay_chunks(resp, call, self.metrics, req.model, req.arrived),
            on_abort=resp.release,
            push=push_relay(resp, call, self.metrics, req, self.client.idle_timeout),
        )


class Retryable(Exception):
    """The engine failed before any byte reached the client; another engine may succeed."""

    def __init__(self, error: RouterError) -> None:
        super().__init__(error.message)
        self.error = error
