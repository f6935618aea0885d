"""Third-party conformance: the router in disagg_prefill mode in front of llm-d's vLLM simulator
(4 prefill + 8 decode processes) under concurrent load.

The simulator implements vLLM's NIXL handshake: a prefill request with `do_remote_decode: true`
answers with `kv_transfer_params`, and a decode request with `do_remote_prefill: true` takes the
short KV-transfer latency as its time to first token instead of the long prefill latency. So a
decode simulator's TTFT histogram tells whether every request it got carried prefill params, and
its HTTP log (`--log-http`) shows the params the router forwarded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import procs
import pytest
import simulators

from tests.e2e.harness import RouterFactory
from tests.e2e.helpers import IGNORE_EOS, MODEL, client, metric

pytestmark = pytest.mark.e2e

PREFILLS = 4
DECODES = 8
REQUESTS = 96
# Each request spends ~0.4 s in prefill and ~0.65 s in decode (32 tokens x 20 ms), so with 24
# clients about 15 decodes overlap: enough that a least-loaded picker must use all 8 decoders.
CONCURRENCY = 24
MAX_TOKENS = 32
SUCCESS = "vllm:request_success_total"
TTFT_COUNT = "vllm:time_to_first_token_seconds_count"
FAST_TTFT_BUCKET = "0.1"  # well below the simulators' 400 ms prefill TTFT


@dataclass
class SimFleet:
    """The simulators and the router in front of them."""

    prefills: list[procs.ManagedProcess]
    decodes: list[procs.ManagedProcess]
    router: procs.ManagedProcess


@pytest.fixture(scope="module")
def fleet(sim_binary: Path, e2e_logs: Path, router_factory: RouterFactory) -> Iterator[SimFleet]:
    """4 prefill + 8 decode simulators behind one disagg_prefill router."""
    prefills = [
        simulators.start_sim(sim_binary, procs.free_port(), e2e_logs / f"sim-prefill-{i}.log")
        for i in range(PREFILLS)
    ]
    decodes = [
        simulators.start_sim(sim_binary, procs.free_port(), e2e_logs / f"sim-decode-{i}.log")
        for i in range(DECODES)
    ]
    sims = prefills + decodes
    try:
        for sim in sims:
            sim.wait_ready(timeout=60.0)
        router = router_factory.start(
            [s.url for s in sims],
            ["prefill"] * PREFILLS + ["decode"] * DECODES,
            "disagg_prefill",
            extra_args=("--kv-transport", "nixl"),
        )
        yield SimFleet(prefills, decodes, router)
    finally:
        for sim in sims:
            sim.stop()


def one_request(router_url: str, i: int) -> int:
    """A mix of completions and chat, streamed and not; returns generated tokens."""
    api = client(router_url)
    prompt = f"request {i}: " + "tell me about disaggregated serving " * (1 + i % 5)
    if i % 4 == 0:
        resp = api.completions.create(
            model=MODEL, prompt=prompt, max_tokens=MAX_TOKENS, extra_body=IGNORE_EOS
        )
        assert resp.usage is not None
        return resp.usage.completion_tokens
    if i % 4 == 1:
        chat = api.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=MAX_TOKENS,
            extra_body=IGNORE_EOS,
        )
        assert chat.usage is not None
        return chat.usage.completion_tokens
    if i % 4 == 2:
        stream = api.completions.create(
            model=MODEL, prompt=prompt, max_tokens=MAX_TOKENS, extra_body=IGNORE_EOS, stream=True
        )
        return sum(1 for c in stream if c.choices and c.choices[0].text)
    chat_stream = api.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=MAX_TOKENS,
        extra_body=IGNORE_EOS,
        stream=True,
    )
    return sum(1 for c in chat_stream if c.choices and c.choices[0].delta.content)


_REQUEST = re.compile(r'"HTTP request" method="POST" requestURI="/v1/')
_BODY = re.compile(r'^ > body="((?:[^"\\]|\\.)*)"')


def inference_bodies(log_path: Path) -> list[dict[str, object]]:
    """The JSON bodies of the /v1/* POSTs a simulator logged (`--log-http`): a request line,
    its headers, then a ` > body="..."` line with the body as an escaped string."""
    bodies: list[dict[str, object]] = []
    pending = False
    for line in log_path.read_text(errors="replace").splitlines():
        if '"HTTP request"' in line or '"HTTP response"' in line:
            pending = bool(_REQUEST.search(line))
            continue
        match = _BODY.match(line)
        if pending and match:
            bodies.append(json.loads(json.loads(f'"{match.group(1)}"')))
            pending = False
    return bodies


def test_load_spreads_and_every_decode_carries_prefill_params(fleet: SimFleet) -> None:
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        tokens = list(pool.map(lambda i: one_request(fleet.router.url, i), range(REQUESTS)))
    assert all(t > 0 for t in tokens)

    prefill_counts = [metric(s.url, SUCCESS) for s in fleet.prefills]
    decode_counts = [metric(s.url, SUCCESS) for s in fleet.decodes]
    print(f"\nper-engine requests: prefill {prefill_counts} decode {decode_counts}")
    assert all(c > 0 for c in prefill_counts + decode_counts), "an engine got no load"
    assert sum(prefill_counts) == REQUESTS
    assert sum(decode_counts) == REQUESTS

    for sim in fleet.decodes:
        # Every decode answered after the KV-transfer latency: none computed its own prefill.
        fast = metric(sim.url, "vllm:time_to_first_token_seconds_bucket", le=FAST_TTFT_BUCKET)
        assert fast == metric(sim.url, TTFT_COUNT) > 0
        for body in inference_bodies(sim.log_path):
            params = body.get("kv_transfer_params")
            assert isinstance(params, dict), body
            assert params["do_remote_prefill"] is True
            assert params["remote_engine_id"] == "DUMMY_ID"  # what the prefill sims return
    for sim in fleet.prefills:
        for body in inference_bodies(sim.log_path):
            params = body.get("kv_transfer_params")
            assert isinstance(params, dict) and params["do_remote_decode"] is True, body
            assert body.get("stream") in (None, False)

    router_metrics = procs.scrape_metrics(fleet.router.url + "/metrics")
    decisions = procs.metric_sum(
        router_metrics, "pdstack_router_pd_decisions_total", decision="disaggregated"
    )
    assert decisions == REQUESTS
    assert procs.metric_sum(router_metrics, "pdstack_router_errors_total") == 0
