"""A request's exact prompt tokens and KV-block hashes, for the KV-event scorers.

Token ids come from the engine's own tokenizer through vLLM's `/tokenize` (the chat template
applied exactly as for the generation call; see docs/architecture.md for the measurement
behind this choice over a local tokenizer), then are hashed the way the engines hash blocks.
A failed or slow tokenization leaves the request without block hashes: it is routed on load
alone, never failed.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from collections.abc import Sequence
from typing import Any

import orjson

from pdrouter.kvcache.hashing import BlockHasher
from pdrouter.kvcache.index import KvBlockIndex
from pdrouter.kvcache.metrics import KvRequestMetrics
from pdrouter.proxy.client import EngineClient
from pdrouter.proxy.context import ClientRequest
from pdrouter.proxy.upstream import engine_headers
from pdrouter.scheduling.request import RequestFeatures
from pdrouter.stats.engine_state import EngineState

log = logging.getLogger(__name__)

# Chat fields that change what the template renders (vLLM's TokenizeChatRequest takes them).
_CHAT_FIELDS = (
    "messages",
    "add_generation_prompt",
    "continue_final_message",
    "add_special_tokens",
    "chat_template",
    "chat_template_kwargs",
    "tools",
    "mm_processor_kwargs",
)


def tokenize_body(api: str, payload: dict[str, Any]) -> dict[str, Any] | None:
    """The /tokenize body for a request, or None when it cannot be hashed like the engine
    would (a cache_salt changes the hashes; batched prompts have several)."""
    if "cache_salt" in payload:
        return None
    body: dict[str, Any] = {"model": payload.get("model")}
    if api == "chat":
        body.update((k, payload[k]) for k in _CHAT_FIELDS if k in payload)
        return body
    prompt = payload.get("prompt")
    if not isinstance(prompt, str):
        return None
    body["prompt"] = prompt
    if "add_special_tokens" in payload:
        body["add_special_tokens"] = payload["add_special_tokens"]
    return body


def _token_ids(payload: dict[str, Any]) -> list[int] | None:
    """A completions prompt given as token ids needs no tokenizer."""
    prompt = payload.get("prompt")
    if isinstance(prompt, list) and prompt and all(type(t) is int for t in prompt):
        return prompt
    return None


def reported_cached_tokens(response: dict[str, Any]) -> int | None:
    """usage.prompt_tokens_details.cached_tokens, or None when the engine does not report it
    (vLLM needs --enable-prompt-tokens-details)."""
    usage = response.get("usage")
    details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return cached if isinstance(cached, int) else None


class PromptKv:
    """The KV side of requests: adds `prompt_tokens` and `block_hashes` to their features,
    and accounts predicted against reported cached tokens."""

    def __init__(
        self,
        client: EngineClient,
        hasher: BlockHasher,
        index: KvBlockIndex,
        timeout: float,
        metrics: KvRequestMetrics,
    ) -> None:
        self.client = client
        self.hasher = hasher
        self.index = index
        self.timeout = timeout
        self.metrics = metrics
        self._turn = itertools.count()

    async def features(self, req: ClientRequest, engines: Sequence[EngineState]) -> RequestFeatures:
        tokens = _token_ids(req.payload)
        if tokens is None:
            tokens = await self._tokenize(req, engines)
        if tokens is None:
            return req.features
        started = time.perf_counter()
        hashes = self.hasher.hashes(req.model, tokens, self.index.__contains__)
        self.metrics.hashing.observe(time.perf_counter() - started)
        return dataclasses.replace(
            req.features,
            prompt_tokens=len(tokens),
            block_hashes=hashes,
            block_size=self.hasher.block_size,
        )

    async def _tokenize(
        self, req: ClientRequest, engines: Sequence[EngineState]
    ) -> list[int] | None:
        body = tokenize_body(req.api, req.payload)
        routable = [e for e in engines if e.routable]
        if body is None or not routable:
            return None
        engine = routable[next(self._turn) % len(routable)]
        started = time.perf_counter()
        try:
            resp = await self.client.post(
                engine.endpoint.url + "/tokenize",
                orjson.dumps(body),
                engine_headers(req.forward_headers, req.request_id),
                first_byte_timeout=self.timeout,
            )
            try:
                raw = await resp.read(self.timeout)
            except BaseException:
                resp.release()
                raise
            data = orjson.loads(raw) if resp.status == 200 else None
            tokens = data.get("tokens") if isinstance(data, dict) else None
        except Exception as exc:  # any failure: route without the index, say why
            self.metrics.tokenize_failures.labels("error").inc()
            log.debug("request %s: /tokenize on %s failed: %r", req.request_id, engine.id, exc)
            return None
        self.metrics.tokenize.observe(time.perf_counter() - started)
        if not isinstance(tokens, list):
            self.metrics.tokenize_failures.labels(f"http_{resp.status}").inc()
            return None
        return tokens

    def predict(
        self, features: RequestFeatures, chosen: EngineState, candidates: Sequence[EngineState]
    ) -> int | None:
        """Tokens the index says `chosen` holds; counts whether it held the longest prefix."""
        if not features.block_hashes:
            return None
        held = self.index.match(features.block_hashes, [c.id for c in candidates])
        mine = held.get(chosen.id, 0)
        if max(held.values(), default=0) > 0:
            best = mine >= max(held.values())
            self.metrics.longest_prefix.labels("yes" if best else "no").inc()
        predicted = mine * features.block_size
        self.metrics.predicted.labels(chosen.endpoint.role.value).observe(predicted)
        return predicted

    def reported(self, role: str, predicted: int | None, reported: int | None) -> None:
        """What the engine said it had cached (usage.prompt_tokens_details.cached_tokens)."""
        if predicted is None or reported is None:
            return
        self.metrics.reported.labels(role).observe(reported)
        if abs(predicted - reported) <= self.hasher.block_size:
            result = "exact"  # vLLM recomputes a fully cached prompt's last block
        else:
            result = "over" if predicted > reported else "under"
        self.metrics.prediction.labels(role, result).inc()
