"""Runs a disaggregated request: plan, prefill (with bounded retries), hand-off, decode relay.

Failure handling for PD lives here and in pd/errors.py only. Transports say how a protocol's
legs look; they never decide about retries, deadlines or breakers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

import orjson

from pdrouter.config import MissingKvPolicy, RouterSettings
from pdrouter.kvcache.index import KvBlockIndex
from pdrouter.pd import errors as pd_errors
from pdrouter.pd.shaping import direct_only
from pdrouter.pd.transports.base import (
    DecodeRequest,
    KvTransport,
    KvWaitTimeout,
    MissingKvParams,
    PrefillResult,
)
from pdrouter.proxy.aggregated import AggregatedProxy, Retryable
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
    bad_request,
    engine_answer,
    not_found_model,
)
from pdrouter.proxy.outcome import BodyOutcome, Outcome, StreamOutcome
from pdrouter.proxy.prompt_kv import PromptKv, reported_cached_tokens
from pdrouter.proxy.tracking import EngineCall
from pdrouter.proxy.upstream import (
    engine_headers,
    error_detail,
    is_json_object,
    push_relay,
    relay_chunks,
)
from pdrouter.scheduling.pd import (
    PdDecision,
    PdUnavailable,
    PrefillDecodePlan,
    build_pd_scheduler,
    decode_candidates,
    prefill_candidates,
    prefill_pool,
)
from pdrouter.stats.engine_state import EnginePool, EngineState
from pdrouter.stats.router_metrics import RouterMetrics

if TYPE_CHECKING:
    from pdrouter.tracing.spans import RequestTrace

log = logging.getLogger(__name__)


_OUTER_SLACK = 0.05  # seconds
_NO_GUARD = contextlib.nullcontext()


class _LegFailed(Exception):
    """A leg failed before anything reached the client. `public` is the client's message (no
    engine address); str() is the log line; `answer` is a busy engine's own reply (429/503),
    what the client gets if no other engine takes the leg."""

    def __init__(
        self,
        public: str,
        engine: str,
        detail: str = "",
        timeout: bool = False,
        answer: RouterError | None = None,
    ) -> None:
        super().__init__(f"{public} [engine {engine}]" + (f": {detail}" if detail else ""))
        self.public = public
        self.timeout = timeout
        self.answer = answer


class _leg_errors:
    """Map an engine call's transport failures to _LegFailed, charging the engine; anything
    else (a cancelled client, our own errors) closes the call as cancelled and propagates.
    A class, not a generator context manager: it is entered up to three times a request, and
    this costs a fifth as much."""

    __slots__ = ("call", "leg", "on_abort")

    def __init__(
        self, call: EngineCall, leg: str, on_abort: Callable[[], None] | None = None
    ) -> None:
        self.call = call
        self.leg = leg
        self.on_abort = on_abort

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            return
        call, leg = self.call, self.leg
        name = call.engine.endpoint.display_name
        if isinstance(exc, EngineConnectError):
            call.close("error", engine_fault=True)
            raise _LegFailed(f"{leg} engine unreachable", name, str(exc)) from None
        if isinstance(exc, EngineTimeout):
            call.close("error", engine_fault=True)
            raise _LegFailed(f"{leg} engine timed out ({exc.what})", name, timeout=True) from None
        if isinstance(exc, EngineBrokenStream):
            call.close("error", engine_fault=True)
            raise _LegFailed(f"{leg} engine broke off", name, str(exc)) from None
        call.close("cancelled")
        if self.on_abort is not None:
            self.on_abort()


def _engine_busy(
    call: EngineCall, leg: str, status: int, raw: bytes, retry_after: str | None
) -> _LegFailed:
    """A 429/503 leg: another engine may take it; a 503 counts against the engine."""
    call.close("error", engine_fault=status >= 500)
    name = call.engine.endpoint.display_name
    answer = engine_answer(status, raw, retry_after, phase=leg, pd=True, engine=name)
    return _LegFailed(f"{leg} engine busy (HTTP {status})", name, answer.message, answer=answer)


class PdOrchestrator:
    """The `disagg_prefill` routing logic."""

    def __init__(
        self,
        settings: RouterSettings,
        pool: EnginePool,
        client: EngineClient,
        metrics: RouterMetrics,
        transport: KvTransport,
        kv: PromptKv | None = None,
        index: KvBlockIndex | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.client = client
        self.metrics = metrics
        self.transport = transport
        self.kv = kv
        self.scheduler = build_pd_scheduler(settings, index, transport.exclusive_prefill)
        # Direct and fallback requests run like aggregated ones, on the planned engine.
        self.direct = AggregatedProxy(
            pool, _Fixed(), client, metrics, non_stream_timeout=settings.non_stream_timeout
        )
        self.non_stream_timeout = self.direct.non_stream_timeout

    async def handle(self, req: ClientRequest) -> Outcome:
        engines = self.pool.for_model(req.model)
        if not engines:
            raise not_found_model(req.model)
        # The one decision "PD or one engine" besides the scheduler's: the transport's own
        # limits first (they may refuse a field), then what no transport can split.
        unsupported = self.transport.unsupported(req) or direct_only(req)
        if unsupported is not None and not unsupported.direct:
            raise bad_request(
                f"{unsupported.field}: {unsupported.reason}", "unsupported_field", unsupported.field
            )
        if self.kv is not None:
            req.features = await self.kv.features(req, engines)
        try:
            plan = self.scheduler.plan(engines, req.features)
        except PdUnavailable as exc:
            raise pd_errors.unavailable(exc.phase, str(exc)) from None
        if unsupported is not None and plan.decision is PdDecision.DISAGGREGATED:
            log.debug("request %s runs direct: %s", req.request_id, unsupported.reason)
            plan = PrefillDecodePlan(
                PdDecision.DIRECT, plan.decode, reason="unsupported_by_transport"
            )
        if req.trace is not None:
            _trace_plan(req.trace, plan, engines)
        if plan.decision is not PdDecision.DISAGGREGATED:
            self.metrics.pd_decisions.labels(req.model, plan.decision.value).inc()
            return await self._direct(plan.decode, req)

        result = await self._prefill_phase(req, plan, engines)
        decision = PdDecision.DISAGGREGATED if result is not None else PdDecision.RECOMPUTE
        self.metrics.pd_decisions.labels(req.model, decision.value).inc()
        decode = plan.decode
        if result is not None and not self.transport.decoder_bound_at_prefill:
            # The prefill may have taken a while: pick the decoder with fresh load figures.
            decoders = decode_candidates(engines, {result.engine.id})
            if decoders and self.scheduler.sessions is None:
                decode = self.scheduler.pick_decode(decoders, req.features)
        return await self._decode_phase(req, result, decode, engines)

    # --- direct ---------------------------------------------------------------------------
    async def _direct(self, engine: EngineState, req: ClientRequest) -> Outcome:
        try:
            return await self.direct.send(engine, req)
        except Retryable as exc:
            err = exc.error
            if err.engine_body is not None:  # a busy engine's own answer, with its Retry-After
                err.phase, err.pd = "decode", True
                raise err from None
            raise pd_errors.failed("decode", err.message, err.detail) from None

    # --- prefill --------------------------------------------------------------------------
    async def _prefill_phase(
        self, req: ClientRequest, plan: PrefillDecodePlan, engines: tuple[EngineState, ...]
    ) -> PrefillResult | None:
        assert plan.prefill is not None
        prefill = plan.prefill
        tried: set[str] = set()
        attempts = 1 + self.settings.prefill_max_retries
        last: _LegFailed | None = None
        send = functools.partial(self._send_prefill, req)
        for attempt in range(attempts):
            tried.add(prefill.id)
            if req.trace is not None:
                req.trace.open_leg("prefill", prefill, attempt)
            # The engine calls inside enforce the deadline themselves (and charge the engine);
            # the outer guard, a little later, bounds what they do not cover, if anything.
            guard = (
                _NO_GUARD
                if self.transport.prefill_bounded
                else asyncio.timeout(self.settings.prefill_timeout + _OUTER_SLACK)
            )
            try:
                predicted = self._predict(req, prefill, engines)
                async with guard:
                    result = await self.transport.prefill(
                        req,
                        prefill,
                        plan.decode,
                        send,
                        self.settings.prefill_timeout,
                    )
                if self.kv is not None:
                    self.kv.reported("prefill", predicted, reported_cached_tokens(result.response))
                if req.trace is not None:
                    req.trace.prefill_done(result.kv_params, result.cached_tokens)
                return result
            except TimeoutError:
                last = _LegFailed(
                    f"prefill exceeded {self.settings.prefill_timeout:g}s",
                    prefill.endpoint.display_name,
                    timeout=True,
                )
                self._charge_timeout(prefill)
            except _LegFailed as exc:
                last = exc
            except MissingKvParams as exc:
                if req.trace is not None:
                    req.trace.prefill_done(None, None)
                self._on_missing_kv(str(exc))
                return None
            except KvWaitTimeout as exc:
                raise pd_errors.timed_out(
                    "kv_transfer", "the prefill engine did not report the KV transfer", str(exc)
                ) from None
            if req.trace is not None:
                req.trace.fail_leg(str(last), last.timeout)
            log.warning("request %s: %s", req.request_id, last)
            others = [
                s
                for s in prefill_candidates(engines, self.transport.exclusive_prefill, tried)
                if s.id != plan.decode.id or not s.endpoint.role.can_decode
            ]
            if not others or attempt + 1 >= attempts:
                break
            self.metrics.retries.labels("prefill").inc()
            await asyncio.sleep(random.uniform(0.0, 0.02 * (2**attempt)))  # jittered backoff
            prefill = self.scheduler.pick_prefill(others, req.features)
        assert last is not None
        if last.answer is not None:
            raise last.answer
        if last.timeout:
            raise pd_errors.timed_out("prefill", last.public, str(last))
        raise pd_errors.failed("prefill", last.public, str(last))

    def _predict(
        self, req: ClientRequest, prefill: EngineState, engines: tuple[EngineState, ...]
    ) -> int | None:
        if self.kv is None:
            return None
        pool = prefill_pool(prefill_candidates(engines, self.transport.exclusive_prefill))
        return self.kv.predict(req.features, prefill, pool)

    def _on_missing_kv(self, message: str) -> None:
        if self.settings.pd_on_missing_kv is MissingKvPolicy.RECOMPUTE:
            self.metrics.pd_missing_kv.labels("recompute").inc()
            log.warning("%s; decode will recompute the prompt", message)
            return None
        self.metrics.pd_missing_kv.labels("fail").inc()
        raise pd_errors.kv_missing(
            "the prefill engine handed over no KV-transfer parameters", message
        )

    def _charge_timeout(self, engine: EngineState) -> None:
        if engine.record_failure():
            log.warning("engine %s: breaker opened", engine.endpoint.display_name)

    async def _send_prefill(
        self,
        req: ClientRequest,
        engine: EngineState,
        path: str,
        body: dict[str, Any],
        deadline: float,
    ) -> dict[str, Any]:
        call = EngineCall(engine, self.metrics, "prefill")
        name = engine.endpoint.display_name
        with _leg_errors(call, "prefill"):
            resp = await self.client.post(
                engine.endpoint.url + path,
                orjson.dumps(body),
                engine_headers(req.forward_headers, req.request_id, req.trace),
                first_byte_timeout=deadline,
            )
            raw = await resp.read(max(deadline - (time.monotonic() - call.started), 0.001))
        if req.trace is not None:
            req.trace.leg_status(resp.status)
        if resp.status in BUSY_STATUSES:
            raise _engine_busy(call, "prefill", resp.status, raw, resp.headers.get("retry-after"))
        if resp.status >= 500:
            call.close("error", engine_fault=True)
            detail = error_detail(raw)
            raise _LegFailed(f"prefill engine answered HTTP {resp.status}: {detail}", name)
        if resp.status >= 400:  # the request is wrong: the engine's own answer, never retried
            call.close("client_error")
            retry_after = resp.headers.get("retry-after")
            raise engine_answer(
                resp.status, raw, retry_after, phase="prefill", pd=True, engine=name
            )
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            call.close("error", engine_fault=True)
            raise _LegFailed("prefill engine answered invalid JSON", name) from None
        if not isinstance(data, dict):
            call.close("error", engine_fault=True)
            raise _LegFailed("prefill engine answered a non-object", name)
        call.close("ok")
        self.metrics.pd_prefill.labels(name).observe(time.monotonic() - call.started)
        return data

    # --- decode ---------------------------------------------------------------------------
    async def _decode_phase(
        self,
        req: ClientRequest,
        result: PrefillResult | None,
        decode: EngineState,
        engines: tuple[EngineState, ...],
    ) -> Outcome:
        handoff_from = time.monotonic()
        dreq = self.transport.decode_request(req, result, decode)
        if req.trace is not None:
            req.trace.handoff_to(self.transport.name)
        if dreq.answer is not None:  # the prefill's first token ended the answer
            return dreq.answer
        retryable = result is None or self.transport.decode_retryable
        attempts = 1 + (self.settings.decode_max_retries if retryable else 0)
        tried: set[str] = set()
        if result is not None:
            tried.add(result.engine.id)
        last: _LegFailed | None = None
        for attempt in range(attempts):
            tried.add(decode.id)
            if attempt == 0:
                self.metrics.pd_handoff.observe(time.monotonic() - handoff_from)
            else:
                self.metrics.retries.labels("decode").inc()
            if req.trace is not None:
                req.trace.open_leg("decode", decode, attempt)
            try:
                return await self._send_decode(req, dreq, decode)
            except _LegFailed as exc:
                if req.trace is not None:
                    req.trace.fail_leg(str(exc), exc.timeout)
                if exc.timeout:
                    raise pd_errors.timed_out("decode", exc.public, str(exc)) from None
                last = exc
                log.warning("request %s: %s", req.request_id, exc)
            others = decode_candidates(engines, tried)
            if not others or attempt + 1 >= attempts:
                break
            decode = self.scheduler.pick_decode(others, req.features)
        assert last is not None
        if last.answer is not None:
            raise last.answer
        hint = "" if retryable else " (the KV cache was sent to that decoder only)"
        raise pd_errors.failed("decode", last.public + hint, str(last))

    async def _send_decode(
        self, req: ClientRequest, dreq: DecodeRequest, engine: EngineState
    ) -> Outcome:
        call = EngineCall(engine, self.metrics, "decode")
        name = engine.endpoint.display_name
        deadline = self.client.first_byte_timeout if dreq.stream else self.non_stream_timeout
        with _leg_errors(call, "decode"):
            resp = await self.client.post(
                engine.endpoint.url + dreq.path,
                dreq.body,
                engine_headers(req.forward_headers, req.request_id, req.trace),
                first_byte_timeout=deadline,
            )
        if req.trace is not None:
            req.trace.leg_status(resp.status)
        with _leg_errors(call, "decode", on_abort=resp.release):
            if resp.status in BUSY_STATUSES:
                raw = await resp.read(self.client.idle_timeout)
                retry_after = resp.headers.get("retry-after")
                raise _engine_busy(call, "decode", resp.status, raw, retry_after)
            if resp.status >= 500:
                detail = error_detail(await resp.read(self.client.idle_timeout))
                call.close("error", engine_fault=True)
                raise _LegFailed(f"decode engine answered HTTP {resp.status}: {detail}", name)
            if resp.status >= 400 or not dreq.stream:
                remaining = deadline - (time.monotonic() - call.started)
                raw = await resp.read(max(remaining, 1.0))
                ok = resp.status < 400
                if ok and not is_json_object(raw):
                    call.close("error", engine_fault=True)
                    raise _LegFailed("decode engine answered invalid JSON", name)
                call.close("ok" if ok else "client_error")
                if ok and dreq.transform_body is not None:
                    raw = dreq.transform_body(raw)
                return BodyOutcome(resp.status, raw, resp.headers.get("content-type"))
        chunks: AsyncIterator[bytes] = relay_chunks(
            resp, call, self.metrics, req.model, req.arrived
        )
        push = None
        if dreq.transform_stream is not None:
            chunks = dreq.transform_stream(chunks)
        else:
            timeout = self.client.idle_timeout
            push = push_relay(resp, call, self.metrics, req, timeout, _decode_error)
        return StreamOutcome(_as_decode_errors(chunks), on_abort=resp.release, push=push)


def _decode_error(exc: RouterError) -> RouterError:
    """After the first byte, failures are the decode leg's: say so in the final SSE event."""
    code = pd_errors.TIMEOUT if exc.code == "timeout" else pd_errors.DECODE_FAILED
    return pd_errors.pd_error(exc.status, code, "decode", exc.message, False, exc.detail)


async def _as_decode_errors(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield chunk
    except RouterError as exc:
        raise _decode_error(exc) from None


def _trace_plan(
    trace: RequestTrace, plan: PrefillDecodePlan, engines: tuple[EngineState, ...]
) -> None:
    routable = [s for s in engines if s.routable]
    trace.scheduled(
        plan.decision.value,
        plan.reason,
        {
            "prefill": [s for s in routable if s.endpoint.role.can_prefill],
            "decode": [s for s in routable if s.endpoint.role.can_decode],
        },
        {"prefill": plan.prefill, "decode": plan.decode},
    )


class _Fixed:
    """A routing logic that always takes the first candidate (the planned engine)."""

    name = "planned"

    def pick(self, candidates: Any, request: Any) -> Any:
        return candidates[0]
