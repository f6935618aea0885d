"""The fake engine's non-generation routes: ``/detokenize``, ``/v1/embeddings`` and stand-ins
for vLLM's pooling APIs (``/pooling``, ``/classify``, ``/score``, ``/rerank`` ...).

Enough of vLLM's shapes for the router's forwarding tests: model checks (404), the request is
recorded in ``/admin/stats``, and the ``http_error`` fault applies. The pooling stand-ins answer
a small fixed object, not what a pooling model computes.
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson
from aiohttp import web

from .inference import error_response, injected_error, recorded_json_body
from .state import EngineState
from .textgen import detokenize, tokenize_text

POOLING_PATHS = (
    "/pooling",
    "/classify",
    "/score",
    "/v1/score",
    "/rerank",
    "/v1/rerank",
    "/v2/rerank",
)


class PoolingHandler:
    """Serves the routes above; one method per route shape."""

    def __init__(self, state: EngineState) -> None:
        self.st = state

    async def _body(self, request: web.Request) -> dict[str, Any] | web.Response:
        body = await recorded_json_body(self.st, request, "pooling")
        if isinstance(body, web.Response):
            return body
        fault = self.st.board.for_request("plain", request.headers.get("X-Fault"))
        if "http_error" in fault:
            return injected_error(fault["http_error"])
        return body

    def _model(self, body: dict[str, Any]) -> str:
        return str(body.get("model") or self.st.knobs.models[0])

    async def detokenize(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        tokens = body.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
            return error_response(400, "tokens must be a list of integers", "tokens")
        return web.json_response({"prompt": detokenize(tokens)}, dumps=_dumps)

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        inputs = body.get("input")
        items = inputs if isinstance(inputs, list) else [inputs]
        if not items or not all(isinstance(i, str) for i in items):
            return error_response(400, "input must be a string or a list of strings", "input")
        data = [
            {"object": "embedding", "index": i, "embedding": _vector(text)}
            for i, text in enumerate(items)
        ]
        tokens = sum(len(tokenize_text(t)) for t in items)
        return web.json_response(
            {
                "object": "list",
                "model": self._model(body),
                "data": data,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
            dumps=_dumps,
        )

    async def pooling(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        return web.json_response(
            {"object": "list", "model": self._model(body), "data": [], "route": request.path},
            dumps=_dumps,
        )


def _vector(text: str) -> list[float]:
    seed = zlib.crc32(text.encode())
    return [((seed >> i) & 0xFF) / 255.0 for i in range(0, 32, 4)]


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def add_pooling_routes(app: web.Application, handler: PoolingHandler) -> None:
    app.router.add_post("/detokenize", handler.detokenize)
    app.router.add_post("/v1/embeddings", handler.embeddings)
    for path in POOLING_PATHS:
        app.router.add_post(path, handler.pooling)
