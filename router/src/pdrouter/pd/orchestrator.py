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
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import orjson

from pdrouter.config import MissingKvPolicy, RouterSettings
from pdrouter.kvcache.index import KvBlockIndex
from pdrouter.pd import errors as pd_errors
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
from pdrouter.proxy.errors import RouterError, bad_request, not_found_model
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

log = logging.getLogger(__name__)


_OUTER_SLACK = 0.05  # seconds


class _LegFailed(Exception):
    """A leg failed before anything reached the client."""

    def __init__(self, message: str, timeout: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout


@contextlib.contextmanager
def _leg_errors(
    call: EngineCall, leg: str, on_abort: Callable[[], None] | None = None
) -> Iterator[None]:
    """Map an engine call's transport failures to _LegFailed, charging the engine; anything
    else (a cancelled client, our own errors) closes the call as cancelled and propagates."""
    name = call.engine.endpoint.display_name
    try:
        yield
    except EngineConnectError as exc:
        call.close("error", engine_fault=True)
        raise _LegFailed(f"{leg} engine {name} unreachable: {exc}") from None
    except EngineTimeout as exc:
        call.close("error", engine_fault=True)
        raise _LegFailed(f"{leg} engine {name} timed out ({exc.what})", True) from None
    except EngineBrokenStream as exc:
        call.close("error", engine_fault=True)
        raise _LegFailed(f"{leg} engine {name} broke off: {exc}") from None
    except BaseException:
        call.close("cancelled")
        if on_abort is not None:
            on_abort()
        raise


class _EngineRejected(Exception):
    """The engine judged the request invalid (4xx): pass its answer through, never retry."""

    def __init__(self, status: int, body: bytes, content_type: str | None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.content_type = content_type


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
        self.direct = AggregatedProxy(pool, _Fixed(), client, metrics)

    async def handle(self, req: ClientRequest) -> Outcome:
        engines = self.pool.for_model(req.model)
        if not engines:
            raise not_found_model(req.model)
        unsupported = self.transport.unsupported(req)
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
            plan = PrefillDecodePlan(PdDecision.DIRECT, plan.decode)
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
            raise pd_errors.failed("decode", exc.error.message) from None

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
            try:
                # The engine calls inside enforce the deadline themselves (and charge the engine);
                # this outer guard, a little later, bounds what they do not cover.
                predicted = self._predict(req, prefill, engines)
                async with asyncio.timeout(self.settings.prefill_timeout + _OUTER_SLACK):
                    result = await self.transport.prefill(
                        req,
                        prefill,
                        plan.decode,
                        send,
                        self.settings.prefill_timeout,
                    )
                if self.kv is not None:
                    self.kv.reported("prefill", predicted, reported_cached_tokens(result.response))
                return result
            except TimeoutError:
                last = _LegFailed(
                    f"prefill on {prefill.endpoint.display_name} exceeded "
                    f"{self.settings.prefill_timeout:g}s",
                    timeout=True,
                )
                self._charge_timeout(prefill)
            except _LegFailed as exc:
                last = exc
            except _EngineRejected as exc:
                raise RouterError(
                    exc.status,
                    error_detail(exc.body),
                    type="invalid_request_error",
                    code="engine_rejected",
                    phase="prefill",
                ) from None
            except MissingKvParams as exc:
                self._on_missing_kv(str(exc))
                return None
            except KvWaitTimeout as exc:
                raise pd_errors.timed_out("kv_transfer", str(exc)) from None
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
        if last.timeout:
            raise pd_errors.timed_out("prefill", str(last))
        raise pd_errors.failed("prefill", str(last))

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
        raise pd_errors.kv_missing(message)

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
                engine_headers(req.forward_headers, req.request_id),
                first_byte_timeout=deadline,
            )
            raw = await resp.read(max(deadline - (time.monotonic() - call.started), 0.001))
        if resp.status >= 500:
            call.close("error", engine_fault=True)
            raise _LegFailed(
                f"prefill engine {name} answered HTTP {resp.status}: {error_detail(raw)}"
            )
        if resp.status >= 400:
            call.close("client_error")
            raise _EngineRejected(resp.status, raw, resp.headers.get("content-type"))
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            call.close("error", engine_fault=True)
            raise _LegFailed(f"prefill engine {name} answered invalid JSON") from None
        if not isinstance(data, dict):
            call.close("error", engine_fault=True)
            raise _LegFailed(f"prefill engine {name} answered a non-object")
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
        if dreq.answer is not None:  # the prefill's first token ended the answer
            return dreq.answer
        retryable = result is None or self.transport.decode_retryable
        attempts = 1 + (self.settings.decode_max_retries if retryable else 0)
        tried: set[str] = set()
        if result is not None:
            tried.add(result.engine.id)
        last_error = ""
        for attempt in range(attempts):
            tried.add(decode.id)
            if attempt == 0:
                self.metrics.pd_handoff.observe(time.monotonic() - handoff_from)
            else:
                self.metrics.retries.labels("decode").inc()
            try:
                return await self._send_decode(req, dreq, decode)
            except _LegFailed as exc:
                if exc.timeout:
                    raise pd_errors.timed_out("decode", str(exc)) from None
                last_error = str(exc)
                log.warning("request %s: %s", req.request_id, exc)
            others = decode_candidates(engines, tried)
            if not others or attempt + 1 >= attempts:
                break
            decode = self.scheduler.pick_decode(others, req.features)
        hint = "" if retryable else " (the KV cache was sent to that decoder only)"
        raise pd_errors.failed("decode", last_error + hint)

    async def _send_decode(
        self, req: ClientRequest, dreq: DecodeRequest, engine: EngineState
    ) -> Outcome:
        call = EngineCall(engine, self.metrics, "decode")
        name = engine.endpoint.display_name
        with _leg_errors(call, "decode"):
            resp = await self.client.post(
                engine.endpoint.url + dreq.path,
                dreq.body,
                engine_headers(req.forward_headers, req.request_id),
            )
        with _leg_errors(call, "decode", on_abort=resp.release):
            if resp.status >= 500:
                detail = error_detail(await resp.read(self.client.idle_timeout))
                call.close("error", engine_fault=True)
                raise _LegFailed(f"decode engine {name} answered HTTP {resp.status}: {detail}")
            if resp.status >= 400 or not dreq.stream:
                raw = await resp.read(self.client.first_byte_timeout)
                ok = resp.status < 400
                if ok and not is_json_object(raw):
                    call.close("error", engine_fault=True)
                    raise _LegFailed(f"decode engine {name} answered invalid JSON")
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
    return pd_errors.pd_error(exc.status, code, "decode", exc.message, False)


async def _as_decode_errors(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield chunk
    except RouterError as exc:
        raise _decode_error(exc) from None


class _Fixed:
    """A routing logic that always takes the first candidate (the planned engine)."""

    def pick(self, candidates: Any, request: Any) -> Any:
        return candidates[0]
