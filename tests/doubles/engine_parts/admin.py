"""Probe, metadata and admin endpoints of the fake engine."""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from . import shapes
from .inference import error_response, hang_forever, recorded_json_body
from .parse import RequestError, chat_tokens, prompt_tokens
from .state import EngineState


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type=shapes.JSON_TYPE)


class AdminHandler:
    """``/health``, ``/metrics``, ``/v1/models``, ``/tokenize`` and ``/admin/*``."""

    def __init__(self, state: EngineState) -> None:
        self.st = state
        self.started = int(time.time())

    async def health(self, request: web.Request) -> web.Response:
        self.st.log.record_probe("/health", request.headers)
        if self.st.board.engine_fault("health_fail") is not None:
            return error_response(503, "engine is unhealthy (injected)")
        return web.Response(status=200)

    async def metrics(self, request: web.Request) -> web.Response:
        self.st.log.record_probe("/metrics", request.headers)
        if self.st.board.engine_fault("metrics_hang") is not None:
            await hang_forever()
        if self.st.board.engine_fault("metrics_error") is not None:
            return error_response(500, "metrics failed (injected)")
        return web.Response(body=self.st.metrics(), content_type="text/plain", charset="utf-8")

    async def models(self, request: web.Request) -> web.Response:
        k = self.st.knobs
        data: list[dict[str, Any]] = [
            {
                "id": m,
                "object": "model",
                "created": self.started,
                "owned_by": "vllm",
                "root": m,
                "parent": None,
                "max_model_len": k.max_model_len,
                "permission": [],
            }
            for m in k.models
        ]
        return _json({"object": "list", "data": data})

    async def version(self, request: web.Request) -> web.Response:
        return _json({"version": "0.0.0+fake-engine"})

    async def tokenize(self, request: web.Request) -> web.Response:
        body = await recorded_json_body(self.st, request, "tokenize")
        if isinstance(body, web.Response):
            return body
        try:
            tokens = chat_tokens(body) if "messages" in body else prompt_tokens(body.get("prompt"))
        except RequestError as exc:
            return error_response(exc.status, exc.message, exc.param)
        return _json(
            {
                "count": len(tokens),
                "max_model_len": self.st.knobs.max_model_len,
                "tokens": tokens,
                "token_strs": None,
            }
        )

    async def get_config(self, request: web.Request) -> web.Response:
        return _json(self.st.config_json())

    async def post_config(self, request: web.Request) -> web.Response:
        try:
            changes = orjson.loads(await request.read())
            if not isinstance(changes, dict):
                raise ValueError("config must be a JSON object")
            self.st.apply(changes)
        except (ValueError, TypeError) as exc:
            return error_response(400, f"bad config: {exc}")
        return _json(self.st.config_json())

    async def stats(self, request: web.Request) -> web.Response:
        return _json(self.st.stats_json())

    async def reset(self, request: web.Request) -> web.Response:
        self.st.reset()
        return _json(self.st.config_json())

    async def kv_pull(self, request: web.Request) -> web.Response:
        """NIXL emulation: a decode engine reads (and thereby releases) held KV."""
        st = self.st
        engine_id = request.query.get("engine_id")
        if engine_id is not None and engine_id != st.knobs.engine_id:
            st.log.kv_pulls_failed += 1
            return error_response(404, f"engine id {engine_id} is not {st.knobs.engine_id}")
        tokens = st.nixl.pull(request.match_info["rid"])
        if tokens is None:
            st.log.kv_pulls_failed += 1
            return error_response(404, "no KV held for this request (unknown or expired)")
        st.log.kv_pulls_served += 1
        return _json({"tokens": tokens})


def add_routes(app: web.Application, admin: AdminHandler) -> None:
    app.router.add_get("/health", admin.health)
    app.router.add_get("/metrics", admin.metrics)
    app.router.add_get("/v1/models", admin.models)
    app.router.add_get("/version", admin.version)
    app.router.add_post("/tokenize", admin.tokenize)
    app.router.add_get("/admin/config", admin.get_config)
    app.router.add_post("/admin/config", admin.post_config)
    app.router.add_get("/admin/stats", admin.stats)
    app.router.add_post("/admin/reset", admin.reset)
    app.router.add_get("/admin/kv/{rid}", admin.kv_pull)
