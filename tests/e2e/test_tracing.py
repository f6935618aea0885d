"""One trace per PD request across the router and both real vLLM engines.

The session's prefill and decode engines export their own `llm_request` spans to the session's
OpenTelemetry Collector (see conftest.py); a traced router exports its spans there too. What an
operator would check: the request is one trace under the client's span, each engine's span hangs
under the router's leg that called it, in the order the request ran; a failed prefill attempt
shows its error on its own span; a client that goes away ends the spans.
"""

from __future__ import annotations

import secrets

import httpx
import procs
import pytest

from tests.e2e.harness import EnginePair, RouterFactory
from tests.e2e.helpers import MODEL, REQUEST_TIMEOUT, unique_prompt
from tests.harness.otel_collector import CLIENT, SERVER, Collector, Trace

pytestmark = [pytest.mark.e2e, pytest.mark.tracing]

ROOT = "POST /v1/completions"
ENGINE_SPAN = "llm_request"  # what vLLM calls the span of one request
TRACE_TIMEOUT = 60.0  # the router's SDK exports every 5 s; a loaded box adds to that


def client_context() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def complete(router_url: str, traceparent: str, max_tokens: int, stream: bool = False) -> None:
    body = {
        "model": MODEL,
        "prompt": unique_prompt(),
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "ignore_eos": True,
        "stream": stream,
    }
    resp = httpx.post(
        router_url + "/v1/completions",
        json=body,
        headers={"traceparent": traceparent},
        timeout=REQUEST_TIMEOUT,
    )
    assert resp.status_code == 200, resp.text


def with_engine_spans(count: int) -> object:
    return lambda t: bool(t.named(ROOT)) and len(t.named(ENGINE_SPAN)) >= count


@pytest.fixture(scope="module")
def router(
    engine_pair: EnginePair, router_factory: RouterFactory, otel_collector: Collector
) -> procs.ManagedProcess:
    """A traced disagg_prefill router in front of the session's (traced) engines."""
    return router_factory.start(
        [engine_pair.prefill.url, engine_pair.decode.url],
        ["prefill", "decode"],
        "disagg_prefill",
        extra_args=("--otlp-traces-endpoint", otel_collector.grpc_endpoint),
    )


def test_pd_request_is_one_trace_with_each_engines_span_under_its_leg(
    router: procs.ManagedProcess, healthy_pair: EnginePair, otel_collector: Collector
) -> None:
    trace_id, span_id, traceparent = client_context()
    complete(router.url, traceparent, max_tokens=8, stream=True)
    trace = otel_collector.wait_for_trace(trace_id, with_engine_spans(2), TRACE_TIMEOUT)

    root = trace.one(ROOT, "pdstack-router")
    assert root.parent_id == span_id and root.kind == SERVER
    assert trace.one("schedule").attributes["pdstack.schedule.decision"] == "disaggregated"
    prefill, handoff, decode = trace.one("prefill"), trace.one("kv_handoff"), trace.one("decode")
    vllm_prefill = trace.one(ENGINE_SPAN, "vllm-prefill")
    vllm_decode = trace.one(ENGINE_SPAN, "vllm-decode")
    assert vllm_prefill.parent_id == prefill.span_id, trace
    assert vllm_decode.parent_id == decode.span_id, trace
    assert prefill.kind == decode.kind == CLIENT
    assert prefill.attributes["server.port"] == healthy_pair.prefill.port
    assert decode.attributes["server.port"] == healthy_pair.decode.port
    assert handoff.attributes["pdstack.kv.params"] is True
    # vLLM's own figures: the prefill leg made one token, the decode leg the eight asked for
    assert vllm_prefill.attributes["gen_ai.usage.completion_tokens"] == 1
    assert vllm_decode.attributes["gen_ai.usage.completion_tokens"] == 8
    assert (
        vllm_prefill.attributes["gen_ai.usage.prompt_tokens"]
        == vllm_decode.attributes["gen_ai.usage.prompt_tokens"]
    )
    # the order the request ran in (one host, one clock)
    assert root.start_ns <= prefill.start_ns <= vllm_prefill.start_ns
    assert vllm_prefill.end_ns <= prefill.end_ns <= handoff.start_ns <= decode.start_ns
    assert decode.start_ns <= vllm_decode.start_ns and vllm_decode.end_ns <= decode.end_ns
    assert decode.end_ns <= root.end_ns
    assert not any(s.failed for s in trace.spans), trace


def test_failed_prefill_attempt_shows_its_error_and_the_retry_reaches_vllm(
    healthy_pair: EnginePair, router_factory: RouterFactory, otel_collector: Collector
) -> None:
    dead_port = procs.free_port()
    dead = f"http://{procs.LOOPBACK}:{dead_port}"  # a prefill engine that crashed
    router = router_factory.start(
        [dead, healthy_pair.prefill.url, healthy_pair.decode.url],
        ["prefill", "prefill", "decode"],
        "disagg_prefill",
        extra_args=(
            "--otlp-traces-endpoint",
            otel_collector.grpc_endpoint,
            # keep the dead engine in rotation, so requests keep trying it first in turn
            "--health-failure-threshold",
            "1000",
            "--breaker-failure-threshold",
            "1000",
        ),
    )
    trace: Trace | None = None
    for _ in range(4):
        trace_id, _, traceparent = client_context()
        complete(router.url, traceparent, max_tokens=4)
        trace = otel_collector.wait_for_trace(trace_id, with_engine_spans(2), TRACE_TIMEOUT)
        if len(trace.named("prefill")) == 2:
            break
    else:
        pytest.fail(f"no request tried the dead prefill engine first:\n{trace}")
    failed, retried = trace.named("prefill")
    assert failed.attributes["server.port"] == dead_port
    assert failed.failed and "unreachable" in failed.status_message
    assert not trace.children(failed)  # nothing answered, so no engine span under it
    assert retried.attributes["server.port"] == healthy_pair.prefill.port
    assert retried.attributes["pdstack.attempt"] == 2 and not retried.failed
    assert trace.one(ENGINE_SPAN, "vllm-prefill").parent_id == retried.span_id
    assert trace.one(ENGINE_SPAN, "vllm-decode").parent_id == trace.one("decode").span_id
    assert not trace.one(ROOT).failed


def test_client_disconnect_ends_the_router_spans(
    router: procs.ManagedProcess, healthy_pair: EnginePair, otel_collector: Collector
) -> None:
    trace_id, _, traceparent = client_context()
    body = {
        "model": MODEL,
        "prompt": unique_prompt(),
        "max_tokens": 600,
        "ignore_eos": True,
        "stream": True,
    }
    with httpx.stream(
        "POST",
        router.url + "/v1/completions",
        json=body,
        headers={"traceparent": traceparent},
        timeout=REQUEST_TIMEOUT,
    ) as resp:
        assert resp.status_code == 200
        lines = resp.iter_lines()
        while "text" not in next(lines):  # first token reached the client
            pass
    trace = otel_collector.wait_for_trace(
        trace_id, lambda t: bool(t.named(ROOT) and t.named("decode")), TRACE_TIMEOUT
    )
    assert trace.one(ROOT).attributes["pdstack.outcome"] == "cancelled"
    assert trace.one("decode").attributes["pdstack.outcome"] == "cancelled"
    assert trace.one(ENGINE_SPAN, "vllm-prefill").parent_id == trace.one("prefill").span_id
