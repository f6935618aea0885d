"""One soak client request and what came of it: ok, cancelled (the client hung up on purpose),
or the failure reason (the error code from the JSON body or the final SSE event)."""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass

import aiohttp
import orjson


@dataclass
class Outcome:
    outcome: str  # "ok", "client_hung_up", an error code, or "transport:<exception>"
    latency: float
    finished: float  # monotonic time


def _body(rng: random.Random, chat: bool, stream: bool) -> dict[str, object]:
    prompt = f"{uuid.uuid4().hex[:8]} " + " ".join(
        rng.choice(["a", "bb", "ccc"]) for _ in range(20)
    )
    body: dict[str, object] = {"model": "tiny", "max_tokens": rng.randint(4, 24), "stream": stream}
    if chat:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    return body


def sse_error(raw: bytes) -> str | None:
    for line in reversed(raw.split(b"\n")):
        if line.startswith(b"data: {") and b'"error"' in line:
            return str(orjson.loads(line[6:])["error"]["code"])
    return None


async def one_request(
    session: aiohttp.ClientSession, url: str, rng: random.Random, disconnect_share: float
) -> Outcome:
    chat = rng.random() < 0.5
    stream = rng.random() < 0.5
    hang_up = rng.random() < disconnect_share
    path = "/v1/chat/completions" if chat else "/v1/completions"
    started = time.monotonic()
    try:
        async with session.post(
            url + path, json=_body(rng, chat, stream), timeout=aiohttp.ClientTimeout(total=30)
        ) as resp:
            if hang_up:  # leave after the headers (stream) or at once (non-stream)
                resp.close()
                return Outcome("client_hung_up", time.monotonic() - started, time.monotonic())
            raw = await resp.read()
    except (TimeoutError, aiohttp.ClientError) as exc:
        return Outcome(
            f"transport:{type(exc).__name__}", time.monotonic() - started, time.monotonic()
        )
    now = time.monotonic()
    if resp.status >= 400:
        try:
            code = str(orjson.loads(raw)["error"]["code"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            code = f"http_{resp.status}"
        return Outcome(code, now - started, now)
    if stream:
        code = sse_error(raw)
        if code is not None:
            return Outcome(code, now - started, now)
        if not raw.rstrip().endswith(b"data: [DONE]"):
            return Outcome("stream_without_done", now - started, now)
    return Outcome("ok", now - started, now)
