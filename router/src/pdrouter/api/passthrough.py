"""vLLM routes besides generation that clients call: forwarded to an engine of the model named
in the body, with the generation routes' errors, retries, request ids and metrics.

Chosen from vLLM's API server: tokenizing (`/tokenize`, `/detokenize`, used by clients to count
and truncate prompts) and the pooling-model APIs (embeddings, pooling, classify, score,
rerank), which are one engine request each. Not forwarded: `/v1/responses` (a stored response
lives in one engine's memory, so a later request that names it needs affinity the router does
not keep), the audio APIs (multipart bodies, model in a form field), the Anthropic-style
`/v1/messages` (a generation API with its own stream format) and the admin and RL routes.
"""

from __future__ import annotations

from typing import Any

from pdrouter.api.validation import check_model
from pdrouter.proxy.errors import bad_request
from pdrouter.stats.engine_state import EnginePool

# path -> `api` name (the metrics label).
PASSTHROUGH_ROUTES = {
    "/tokenize": "tokenize",
    "/detokenize": "detokenize",
    "/v1/embeddings": "embeddings",
    "/pooling": "pooling",
    "/classify": "classify",
    "/score": "score",
    "/v1/score": "score",
    "/rerank": "rerank",
    "/v1/rerank": "rerank",
    "/v2/rerank": "rerank",
}


class PassThroughValidator:
    """`model` picks the engines; without one, the only model served (vLLM's default too)."""

    def __init__(self, pool: EnginePool) -> None:
        self.pool = pool

    def __call__(self, api: str, payload: dict[str, Any]) -> tuple[str, bool]:
        if payload.get("model") is None:
            models = self.pool.models()
            if len(models) == 1:
                return models[0], False
            raise bad_request(
                "'model' is required when the router serves several models",
                "missing_model",
                "model",
            )
        return check_model(payload), False
