"""Small helpers shared by the e2e tests: prompts, reference outputs, metric deltas."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import httpx
import openai
import procs

MODEL = "tiny"
# The tiny model has random weights: check token counts, metrics and equality of greedy output
# (temperature 0) between paths, never the text itself. vLLM's ignore_eos (sent as extra body)
# makes every answer exactly max_tokens long.
IGNORE_EOS: dict[str, object] = {"ignore_eos": True}
REQUEST_TIMEOUT = 60.0  # NIXL on 2 cores is jittery (up to ~1 s per request): be generous

_FILLER = (
    "def handle(request, engine, config):\n"
    "    # pick the engine with the fewest running requests and forward the body\n"
    "    return engine.forward(request.body, timeout=config.timeout)\n"
)


def unique_prompt(repeats: int = 4) -> str:
    """A prompt no engine has seen (so no local prefix-cache hit), ~50 tokens per repeat."""
    return f"# request {uuid.uuid4().hex}\n" + _FILLER * repeats


def client(base_url: str, max_retries: int = 0) -> openai.OpenAI:
    """The official OpenAI client pointed at a router (or engine)."""
    return openai.OpenAI(
        base_url=base_url + "/v1",
        api_key="unused",
        timeout=REQUEST_TIMEOUT,
        max_retries=max_retries,
    )


def engine_completion(engine_url: str, prompt: str, max_tokens: int) -> tuple[str, int]:
    """Greedy completion computed by one engine alone: (text, prompt token count)."""
    resp = client(engine_url).completions.create(
        model=MODEL, prompt=prompt, max_tokens=max_tokens, temperature=0.0, extra_body=IGNORE_EOS
    )
    assert resp.usage is not None
    return resp.choices[0].text, resp.usage.prompt_tokens


def engine_chat(engine_url: str, content: str, max_tokens: int) -> str:
    """Greedy chat answer computed by one engine alone."""
    resp = client(engine_url).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": content}],
        max_tokens=max_tokens,
        temperature=0.0,
        extra_body=IGNORE_EOS,
    )
    return resp.choices[0].message.content or ""


def metric(url: str, name: str, **labels: str) -> float:
    """Current value of one metric (summed over other labels) at `url`/metrics."""
    return procs.metric_sum(procs.scrape_metrics(url + "/metrics"), name, **labels)


def wait_for_value(read: Callable[[], float], expected: float, timeout: float = 10.0) -> float:
    """Poll `read` until it returns `expected` (engines publish counters a moment after
    answering); return the last value read so the caller's assert shows it."""
    deadline = time.monotonic() + timeout
    value = read()
    while value != expected and time.monotonic() < deadline:
        time.sleep(0.2)
        value = read()
    return value


def wait_router_ready(router_url: str, timeout: float = 60.0) -> None:
    """Wait until the router's /ready says every model has a healthy path again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if procs.http_status(router_url + "/ready") == 200:
            return
        time.sleep(0.5)
    raise AssertionError(f"router {router_url} not ready after {timeout:.0f}s")


def post(url: str, body: dict[str, object], timeout: float = REQUEST_TIMEOUT) -> httpx.Response:
    """A plain POST whose status and headers the test inspects."""
    return httpx.post(url, json=body, timeout=timeout)
