"""``/v1/completions`` and ``/v1/chat/completions`` of the fake engine, with PD and faults."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from aiohttp import web

from . import shapes
from .faults import FaultSpec
from .kv import nixl_params
from .parse import DECODE, LMCACHE_PREFILL, PREFILL, Parsed, RequestError, classify, parse_request
from .state import EngineState
from .textgen import TOKEN_JSON, detokenize, fold_prompt, generate

log = logging.getLogger("fake_engine")
_SELF_HOSTS = frozenset({"localhost", "0.0.0.0", "::", "::1"})
_BROKEN_JSON = b'{"id": "cmpl-broken", "object": "text_completion", "choices": [{"text": "'


class AbortedByFault(Exception):
    """An injected fault dropped the connection on purpose (not a client cancellation)."""


def error_response(status: int, message: str, param: str | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=shapes.error_body(status, message, param),
        content_type=shapes.JSON_TYPE,
    )


def injected_error(spec: FaultSpec) -> web.Response:
    """The `http_error` fault's answer, with `Retry-After` when the fault names one."""
    resp = error_response(spec.status, spec.message or f"injected error {spec.status}")
    if "retry_after" in spec.extra:
        resp.headers["Retry-After"] = str(spec.extra["retry_after"])
    return resp


async def recorded_json_body(
    st: EngineState, request: web.Request, kind: str
) -> dict[str, Any] | web.Response:
    """A non-generation route's JSON object body, recorded in /admin/stats; an error response
    (400, or 404 for a model not served) instead when it is not acceptable."""
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return error_response(400, "Invalid JSON body")
    if not isinstance(body, dict):
        return error_response(400, "request body must be a JSON object")
    st.log.record(request.path, kind, request.headers, body)
    model = body.get("model")
    if model is not None and model not in st.knobs.models:
        return error_response(404, f"The model `{model}` does not exist.", "model")
    return body


def _has_disagg_spec(params: dict[str, Any] | None) -> bool:
    spec = (params or {}).get("disagg_spec")
    return isinstance(spec, dict) and isinstance(spec.get("receiver_init_port"), list)


async def _sleep_until(when: float) -> None:
    """Tokens follow a fixed schedule, so a busy loop does not stretch the average ITL."""
    delay = when - asyncio.get_running_loop().time()
    if delay > 0:
        await asyncio.sleep(delay)


async def hang_forever() -> None:
    """Never answer; the handler is cancelled when the client goes away."""
    await asyncio.Event().wait()


class InferenceHandler:
    """Serves one inference request end to end; the hot path avoids per-token JSON work."""

    def __init__(self, state: EngineState) -> None:
        self.st = state

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=False)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=True)

    async def _serve(self, request: web.Request, chat: bool) -> web.StreamResponse:
        st = self.st
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return error_response(400, "Invalid JSON body")
        kind = classify(body) if isinstance(body, dict) else "plain"
        st.log.record(request.path, kind, request.headers, body)
        fault_header = request.headers.get("X-Fault")
        return_error = request.headers.get("X-Return-Error")  # llm-d simulator's header
        if return_error:
            fault_header = f"http_error;status={return_error}" + (
                f",{fault_header}" if fault_header else ""
            )
        try:
            faults = st.board.for_request(kind, fault_header)
        except ValueError as exc:
            return error_response(400, f"bad X-Fault header: {exc}")
        try:
            if faults:
                early = await self._early_faults(request, faults, body)
                if early is not None:
                    return early
            resp = await self._generate(request, chat, body, faults)
        except RequestError as exc:
            resp = error_response(exc.status, exc.message, exc.param)
        except AbortedByFault:
            st.log.by_status["aborted"] += 1
            raise asyncio.CancelledError from None  # aiohttp drops the connection quietly
        except asyncio.CancelledError:
            st.log.cancelled += 1  # the client went away (handler cancellation is on)
            raise
        st.log.by_status[str(resp.status)] += 1
        return resp

    async def _early_faults(
        self, request: web.Request, faults: dict[str, FaultSpec], body: Any
    ) -> web.StreamResponse | None:
        if "refuse" in faults:
            if request.transport is not None:
                request.transport.abort()  # the client sees a dropped connection
            raise AbortedByFault
        if "hang" in faults:
            await hang_forever()
        if "slow" in faults:
            await asyncio.sleep(faults["slow"].delay_ms / 1000)
        if "http_error" in faults:
            return injected_error(faults["http_error"])
        if "invalid_json" in faults:
            stream = isinstance(body, dict) and body.get("stream") is True
            if not stream:
                return web.Response(status=200, body=_BROKEN_JSON, content_type="application/json")
            resp = web.StreamResponse(status=200, headers=shapes.SSE_HEADERS)
            await resp.prepare(request)
            await resp.write(b"data: " + _BROKEN_JSON + b"\n\n" + shapes.DONE)
            await resp.write_eof()
            return resp
        return None

    async def _generate(
        self, request: web.Request, chat: bool, body: Any, faults: dict[str, FaultSpec]
    ) -> web.StreamResponse:
        st = self.st
        k = st.knobs
        p = parse_request(body, chat, k)
        if k.lmcache_pd_role == "sender" and not _has_disagg_spec(p.kv_params):
            return self._die_like_lmcache_sender()
        xrid = request.headers.get("X-Request-Id")
        base = xrid or os.urandom(16).hex()
        rid = ("chatcmpl-" if chat else "cmpl-") + base
        headers = {"X-Request-Id": xrid} if xrid else {}
        await st.acquire_slot()
        n_prompt = len(p.tokens)
        c = st.counters
        try:
            state, blocks = fold_prompt(p.tokens, k.block_size)
            cached = st.prefix.match(blocks, n_prompt, k.block_size)
            c.prefix_queries += n_prompt
            c.prefix_hits += cached
            ttft_s = k.ttft_ms / 1000
            if p.kind == DECODE:
                c.external_queries += n_prompt
                if await self._load_remote_kv(p, faults):
                    st.log.kv_loads_ok += 1
                    c.external_hits += n_prompt
                    cached = n_prompt
                    ttft_s = k.kv_transfer_ms / 1000
                else:
                    st.log.kv_loads_failed += 1
                    if k.kv_load_failure_policy == "fail":
                        return error_response(
                            500, f"KV transfer failed for request {rid}: remote KV not loaded"
                        )
            st.prefix.insert(blocks)
            n_out, finish = self._output_length(p)
            out = generate(state, n_out)
            use = shapes.usage(n_prompt, n_out * p.n, cached)
            created = int(time.time())
            c.running_tokens += n_prompt + n_out
            try:
                if p.stream:
                    resp = await self._stream(
                        request, p, rid, created, out, finish, use, faults, ttft_s, headers
                    )
                else:
                    kv_out = self._kv_out(p, rid, out, faults)
                    total = ttft_s + k.itl_ms / 1000 * max(0, n_out - 1)
                    if total > 0:
                        await asyncio.sleep(total)
                    build = shapes.chat_body if chat else shapes.completion_body
                    text = detokenize(out)
                    resp = web.Response(
                        body=build(rid, created, p.model, text, finish, use, kv_out, p.n),
                        content_type=shapes.JSON_TYPE,
                        headers=headers,
                    )
            finally:
                c.running_tokens -= n_prompt + n_out
            c.prompt_tokens += n_prompt
            c.generation_tokens += n_out
            c.success[finish] += 1
            return resp
        finally:
            st.release_slot()

    def _die_like_lmcache_sender(self) -> web.Response:
        """LMCache 0.5.6 PD sender, seen on a GPU: storing the KV of a request without
        disagg_spec fails ('NoneType' object has no attribute 'receiver_init_port') and the
        engine core dies; vLLM fails the request with 500 and the server exits."""
        log.error(
            "LMCache ERROR: batched_submit_put_task failed: 'NoneType' object has no attribute "
            "'receiver_init_port' (generation request without disagg_spec on a PD sender); "
            "EngineCore encountered a fatal error"
        )
        asyncio.get_running_loop().call_later(0.05, os._exit, 70)
        return error_response(500, "EngineCore encountered a fatal error.")

    def _output_length(self, p: Parsed) -> tuple[int, str]:
        k = self.st.knobs
        n, finish = p.max_tokens, "length"
        if k.max_output_tokens and k.max_output_tokens < n:
            n, finish = k.max_output_tokens, "stop"
        if k.eos_after and not p.ignore_eos:
            eos_at = max(k.eos_after, p.min_tokens)
            if eos_at <= n:  # like vLLM: EOS as the last allowed token still reads "stop"
                n, finish = eos_at, "stop"
        return n, finish

    def _kv_out(
        self, p: Parsed, rid: str, out: list[int], faults: dict[str, FaultSpec]
    ) -> dict[str, Any] | None:
        """Prefill responses carry kv_transfer_params (NIXL) or first_tok (LMCache)."""
        st, k = self.st, self.st.knobs
        if p.kind == PREFILL and "no_kv_params" not in faults:
            remote_rid = f"{rid}-{os.urandom(4).hex()}"
            block_ids = st.nixl.hold(remote_rid, p.tokens, k.kv_lease_seconds, k.block_size)
            # Like vLLM, n > 1 fans out into n sequences that each hold their KV for a remote
            # decode, but only one set of params comes back: the others stay held (leaked)
            # until their lease ends.
            for child in range(1, p.n):
                st.nixl.hold(f"{remote_rid}-{child}", p.tokens, k.kv_lease_seconds, k.block_size)
            return nixl_params(
                block_ids=block_ids,
                engine_id=k.engine_id,
                remote_request_id=remote_rid,
                host=k.side_channel_host,
                port=st.port,
                tp_size=k.tp_size,
                num_tokens=len(p.tokens),
                lease_s=k.kv_lease_seconds,
            )
        if p.kind == LMCACHE_PREFILL and "no_kv_params" not in faults:
            self._notify_lmcache(p, faults)
            return {"first_tok": out[0]} if out else {}
        return None

    def _notify_lmcache(self, p: Parsed, faults: dict[str, FaultSpec]) -> None:
        st, k = self.st, self.st.knobs
        spec = (p.kv_params or {}).get("disagg_spec")
        if not isinstance(spec, dict) or "req_id" not in spec or "lmcache_no_notify" in faults:
            return
        if not k.lmcache_proxy_port:
            log.warning("LMCache prefill without --lmcache-proxy-port: no notification sent")
            return
        ranks = k.tp_size
        if "lmcache_partial_notify" in faults:
            partial = faults["lmcache_partial_notify"].ranks
            ranks = max(0, k.tp_size - 1) if partial is None else min(partial, k.tp_size)
        url = f"tcp://{k.lmcache_proxy_host}:{k.lmcache_proxy_port}"
        st.notifier.schedule(url, str(spec["req_id"]), ranks, k.lmcache_notify_delay_ms / 1000)

    async def _load_remote_kv(self, p: Parsed, faults: dict[str, FaultSpec]) -> bool:
        """Decode side: pull the prompt's KV from the prefill engine named in the params."""
        if "kv_expired" in faults:
            return False
        params = p.kv_params or {}
        host, port = params.get("remote_host"), params.get("remote_port")
        remote_rid = params.get("remote_request_id")
        if not host or not port or not remote_rid:
            return False
        if host in _SELF_HOSTS:
            # Like vLLM's NIXL side channel left on its "localhost" default: the decode
            # handshakes with itself and finds no KV (vllm#27083). Routers fix this with
            # --pd-override-remote-host; tests reproduce it with side_channel_host=localhost.
            host, port = "127.0.0.1", self.st.port
        url = f"http://{host}:{port}/admin/kv/{quote(str(remote_rid), safe='')}"
        query = {"engine_id": str(params.get("remote_engine_id"))}
        timeout = aiohttp.ClientTimeout(total=self.st.knobs.kv_pull_timeout_s)
        try:
            async with self.st.session().get(url, params=query, timeout=timeout) as r:
                if r.status != 200:
                    return False
                data = await r.json(loads=orjson.loads)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return False
        # A mismatch means the router sent the decode a different prompt than the prefill.
        return isinstance(data, dict) and data.get("tokens") == p.tokens

    async def _stream(
        self,
        request: web.Request,
        p: Parsed,
        rid: str,
        created: int,
        out: list[int],
        finish: str,
        use: dict[str, Any],
        faults: dict[str, FaultSpec],
        ttft_s: float,
        headers: dict[str, str],
    ) -> web.StreamResponse:
        k = self.st.knobs
        sc = shapes.StreamChunks(p.chat, rid, created, p.model, k.chat_delta)
        resp = web.StreamResponse(status=200, headers={**shapes.SSE_HEADERS, **headers})
        await resp.prepare(request)  # vLLM sends headers at once, data after the prefill
        if "hang_before_first_byte" in faults:
            await hang_forever()
        if ttft_s > 0:
            await asyncio.sleep(ttft_s)
        itl = k.itl_ms / 1000
        last = len(out) - 1
        t0 = asyncio.get_running_loop().time()
        if p.n > 1 or k.split_first_token:
            await self._shaped_stream(resp, sc, p, out, finish, use, itl, t0)
            await resp.write_eof()
            return resp
        if not faults:
            if itl <= 0 and k.coalesce_chunks:
                parts = [sc.role()] if p.chat else []
                parts += [sc.token(t, finish if i == last else None) for i, t in enumerate(out)]
                if p.include_usage:
                    parts.append(sc.usage(use))
                parts.append(shapes.DONE)
                await resp.write(b"".join(parts))
            else:
                if p.chat:
                    await resp.write(sc.role())
                for i, t in enumerate(out):
                    if i and itl > 0:
                        await _sleep_until(t0 + i * itl)
                    await resp.write(sc.token(t, finish if i == last else None))
                if p.include_usage:
                    await resp.write(sc.usage(use))
                await resp.write(shapes.DONE)
            await resp.write_eof()
            return resp
        return await self._faulty_stream(request, resp, sc, p, out, finish, use, faults, itl, t0)

    async def _shaped_stream(
        self,
        resp: web.StreamResponse,
        sc: shapes.StreamChunks,
        p: Parsed,
        out: list[int],
        finish: str,
        use: dict[str, Any],
        itl: float,
        t0: float,
    ) -> None:
        """Streams of n sequences (one event per sequence and step, like vLLM), or with the
        first token's event split in two writes inside its text (knob split_first_token)."""
        if p.chat:
            await resp.write(b"".join(sc.role(i) for i in range(p.n)))
        last = len(out) - 1
        for j, t in enumerate(out):
            if j and itl > 0:
                await _sleep_until(t0 + j * itl)
            fin = finish if j == last else None
            step = b"".join(sc.token(t, fin, i) for i in range(p.n))
            if j == 0 and self.st.knobs.split_first_token:
                cut = step.index(TOKEN_JSON[t]) + 1  # just after the text's opening quote
                await resp.write(step[:cut])
                await asyncio.sleep(0.05)  # lands as a separate read on the other side
                step = step[cut:]
            await resp.write(step)
        if p.include_usage:
            await resp.write(sc.usage(use))
        await resp.write(shapes.DONE)

    async def _faulty_stream(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        sc: shapes.StreamChunks,
        p: Parsed,
        out: list[int],
        finish: str,
        use: dict[str, Any],
        faults: dict[str, FaultSpec],
        itl: float,
        t0: float,
    ) -> web.StreamResponse:
        chunks = [sc.role()] if p.chat else []
        last = len(out) - 1
        chunks += [sc.token(t, finish if i == last else None) for i, t in enumerate(out)]
        if p.include_usage:
            chunks.append(sc.usage(use))
        mode = next(
            (m for m in ("die_mid_stream", "stall_mid_stream", "truncated_stream") if m in faults),
            None,
        )
        limit = len(chunks)
        after = faults[mode].after_chunks if mode is not None else None
        if after is not None:
            limit = min(limit, after)
        for i, chunk in enumerate(chunks[:limit]):
            if i and itl > 0:
                await _sleep_until(t0 + i * itl)
            await resp.write(chunk)
        if mode == "die_mid_stream":
            if request.transport is not None:
                request.transport.abort()
            raise AbortedByFault
        if mode == "stall_mid_stream":
            await hang_forever()
        if mode != "truncated_stream":
            await resp.write(shapes.DONE)
        await resp.write_eof()
        return resp
