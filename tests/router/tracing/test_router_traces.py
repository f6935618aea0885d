"""Traces of the real router process, as a real OpenTelemetry Collector stores them.

The engines are the fake engine (a test double: it has no tracing of its own, but records the
W3C headers it received, so the tests see which span each leg told the engine to hang under).
tests/e2e/test_tracing.py does the same with real vLLM engines exporting their own spans.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import httpx
import pytest

from tests.harness.otel_collector import CLIENT, SERVER, Collector
from tests.harness.router_proc import RouterProcess, static_args

pytestmark = [pytest.mark.tracing, pytest.mark.slow]

PROMPT = "The quick brown fox jumps over the lazy dog. " * 8
CHAT = "/v1/chat/completions"
ROOT = f"POST {CHAT}"
# The SDK exports every 5 s by default; the tests do not want to wait that long.
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_SERVICE_NAME": "router-under-test"}


def client_context(sampled: bool = True) -> tuple[str, str, str]:
    """A client's (trace id, span id, traceparent)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"


def traced_router(
    collector: Collector,
    engines: list[Any],
    roles: list[str],
    *extra: str,
    protocol: str = "grpc",
    env: dict[str, str] | None = None,
    logic: str = "disagg_prefill",
) -> RouterProcess:
    endpoint = collector.grpc_endpoint if protocol == "grpc" else collector.http_traces_endpoint
    args = [
        *static_args(engines, roles=roles),
        "--routing-logic",
        logic,
        "--engine-scrape-interval",
        "0.5",
        "--otlp-traces-endpoint",
        endpoint,
        *extra,
    ]
    env = {**FAST_EXPORT, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": protocol, **(env or {})}
    return RouterProcess(args, env=env).start()


def chat(router: RouterProcess, traceparent: str | None, **body: Any) -> httpx.Response:
    headers = {"traceparent": traceparent} if traceparent else {}
    payload = {"model": "tiny", "messages": [{"role": "user", "content": PROMPT}], **body}
    return httpx.post(router.url + CHAT, json=payload, headers=headers, timeout=30)


def received(engine: Any, kind: str) -> list[dict[str, str]]:
    """The headers of every `kind` request (prefill, decode, plain) the fake engine got."""
    return [r["headers"] for r in engine.stats()["recent"] if r["kind"] == kind]


def name(engine: Any) -> str:
    """How the router names a statically discovered engine (host:port)."""
    return str(engine.url).removeprefix("http://")


def parent_of(headers: dict[str, str]) -> str:
    return headers["traceparent"].split("-")[2]


def ended(*names: str) -> Any:
    return lambda trace: all(trace.named(n) for n in (ROOT, *names))


@pytest.mark.parametrize(
    ("protocol", "path"), [("grpc", CHAT), ("http/protobuf", "/v1/completions")]
)
def test_pd_stream_is_one_trace_under_the_clients_span(
    collector: Collector, fake_engine_factory: Any, protocol: str, path: str
) -> None:
    p = fake_engine_factory(models=["tiny"], role="prefill")
    d = fake_engine_factory(models=["tiny"], role="decode")
    trace_id, span_id, traceparent = client_context()
    body: dict[str, Any] = {"model": "tiny", "max_tokens": 6, "stream": True}
    body |= (
        {"messages": [{"role": "user", "content": PROMPT}]} if path == CHAT else {"prompt": PROMPT}
    )
    if path == CHAT:  # usage makes the router rewrite the stream; completions is relayed as is
        body["stream_options"] = {"include_usage": True}
    root_name = f"POST {path}"
    with traced_router(collector, [p, d], ["prefill", "decode"], protocol=protocol) as r:
        resp = httpx.post(
            r.url + path,
            json=body,
            headers={
                "traceparent": traceparent,
                "tracestate": "vendor=opaque",
                "x-request-id": "r-1",
            },
            timeout=30,
        )
        assert resp.status_code == 200 and resp.text.endswith("data: [DONE]\n\n")
        trace = collector.wait_for_trace(
            trace_id, lambda t: bool(t.named(root_name) and t.named("decode"))
        )

    root = trace.one(root_name)
    assert root.parent_id == span_id and root.kind == SERVER
    assert root.service == "router-under-test"
    assert root.attributes["pdstack.client_request.id"] == "r-1"  # the router's id is its own
    assert root.attributes["pdstack.request.id"] not in ("", "r-1")
    assert root.attributes["gen_ai.operation.name"] == (
        "chat" if path == CHAT else "text_completion"
    )
    assert root.attributes["gen_ai.request.model"] == "tiny"
    assert root.attributes["gen_ai.request.max_tokens"] == 6
    assert root.attributes["gen_ai.request.stream"] is True
    assert root.attributes["http.response.status_code"] == 200
    assert root.attributes["pdstack.outcome"] == "ok"
    assert root.attributes["gen_ai.response.time_to_first_chunk"] > 0
    assert not root.failed

    phases = [s.name for s in trace.children(root)]
    assert phases == ["schedule", "prefill", "kv_handoff", "decode"], trace
    schedule, prefill, handoff, decode = (trace.one(n) for n in phases)
    assert schedule.attributes["pdstack.schedule.prefill_candidates"] == [name(p)]
    assert schedule.attributes["pdstack.schedule.decode_engine"] == name(d)
    assert prefill.kind == CLIENT and decode.kind == CLIENT
    assert (
        prefill.attributes["server.port"] == p.port and prefill.attributes["pdstack.attempt"] == 1
    )
    assert prefill.attributes["server.port"] == p.port
    assert prefill.attributes["http.response.status_code"] == 200
    assert handoff.attributes["pdstack.kv.params"] is True
    assert handoff.attributes["pdstack.kv.transport"] == "nixl"
    assert schedule.attributes["pdstack.schedule.decision"] == "disaggregated"
    assert decode.attributes["server.port"] == d.port
    assert decode.attributes["gen_ai.response.finish_reasons"] == ["length"]
    if path == CHAT:
        assert decode.attributes["gen_ai.usage.output_tokens"] == 6
    assert decode.attributes["gen_ai.response.time_to_first_chunk"] > 0
    # in time order, each phase after the one it depends on
    assert root.start_ns <= prefill.start_ns < prefill.end_ns <= handoff.start_ns
    assert handoff.end_ns <= decode.start_ns < decode.end_ns <= root.end_ns

    # each engine was told to hang its spans under its own leg, in the client's trace
    (p_headers,) = received(p, "prefill")
    (d_headers,) = received(d, "decode")
    assert p_headers["traceparent"].split("-")[1] == trace_id
    assert parent_of(p_headers) == prefill.span_id
    assert parent_of(d_headers) == decode.span_id
    assert p_headers["tracestate"] == d_headers["tracestate"] == "vendor=opaque"


def test_failed_prefill_attempt_carries_its_error_and_the_retry_succeeds(
    collector: Collector, fake_engine_factory: Any
) -> None:
    bad = fake_engine_factory(models=["tiny"], role="prefill")
    good = fake_engine_factory(models=["tiny"], role="prefill")
    d = fake_engine_factory(models=["tiny"], role="decode")
    bad.set_faults(http_error={"status": 503})
    with traced_router(collector, [bad, good, d], ["prefill", "prefill", "decode"]) as r:
        # Tied prefill engines take turns (new prompts: no prefix affinity), so one of a few
        # requests starts on `bad`.
        for i in range(4):
            trace_id, _, traceparent = client_context()
            messages = [{"role": "user", "content": f"{i} {trace_id} {PROMPT}"}]
            assert chat(r, traceparent, max_tokens=2, messages=messages).status_code == 200
            trace = collector.wait_for_trace(trace_id, ended("decode"))
            if len(trace.named("prefill")) == 2:
                break
        else:
            pytest.fail("no request tried the failing prefill engine first")
        log = r.log_text()
    failed, retried = trace.named("prefill")
    assert failed.attributes["server.port"] == bad.port
    assert failed.attributes["pdstack.attempt"] == 1
    assert failed.failed and "503" in failed.status_message
    assert failed.attributes["error.type"] == "503"
    assert failed.attributes["http.response.status_code"] == 503
    assert retried.attributes["server.port"] == good.port
    assert retried.attributes["pdstack.attempt"] == 2
    assert not retried.failed
    assert not trace.one(ROOT).failed
    assert parent_of(received(good, "prefill")[-1]) == retried.span_id
    # the router's warning about the failed attempt ends with the trace id (text log format)
    warned = [line for line in log.splitlines() if "busy (HTTP 503)" in line]
    assert warned and warned[-1].endswith(f"trace_id={trace.trace_id}"), log


def test_prefill_failing_everywhere_fails_the_request_span_and_logs_the_trace_id(
    collector: Collector, fake_engine_factory: Any
) -> None:
    p = fake_engine_factory(models=["tiny"], role="prefill")
    d = fake_engine_factory(models=["tiny"], role="decode")
    p.set_faults(http_error={"status": 500})
    trace_id, _, traceparent = client_context()
    with traced_router(collector, [p, d], ["prefill", "decode"], "--log-format", "json") as r:
        resp = chat(r, traceparent, max_tokens=2)
        assert resp.status_code == 502
        assert resp.json()["error"]["code"] == "prefill_failed"
        trace = collector.wait_for_trace(trace_id, ended("prefill"))
        log = r.log_text()
    root = trace.one(ROOT)
    assert root.failed
    assert root.attributes["pdstack.pd.error_reason"] == "prefill_failed"
    assert root.attributes["pdstack.pd.error_phase"] == "prefill"
    assert root.attributes["http.response.status_code"] == 502
    (prefill,) = trace.named("prefill")
    assert prefill.failed and prefill.attributes["error.type"] == "500"
    assert not trace.named("decode")
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    mine = [line for line in lines if line.get("trace_id") == trace_id]
    assert any("failed" in line["msg"] for line in mine), log


def test_decode_breaking_mid_stream_is_the_decode_spans_error(
    collector: Collector, fake_engine_factory: Any
) -> None:
    p = fake_engine_factory(models=["tiny"], role="prefill")
    d = fake_engine_factory(models=["tiny"], role="decode")
    d.set_faults(die_mid_stream={"after_chunks": 2})
    trace_id, _, traceparent = client_context()
    with traced_router(collector, [p, d], ["prefill", "decode"]) as r:
        resp = chat(r, traceparent, max_tokens=20, stream=True)
        assert resp.status_code == 200 and "decode_failed" in resp.text
        trace = collector.wait_for_trace(trace_id, ended("decode"))
    decode, root = trace.one("decode"), trace.one(ROOT)
    assert decode.failed and decode.attributes["error.type"] == "decode_failed"
    assert root.failed and root.attributes["pdstack.pd.error_reason"] == "decode_failed"
    assert root.attributes["pdstack.pd.error_phase"] == "decode"
    assert not trace.one("prefill").failed


def test_client_disconnect_mid_stream_ends_the_spans(
    collector: Collector, fake_engine_factory: Any
) -> None:
    p = fake_engine_factory(models=["tiny"], role="prefill")
    d = fake_engine_factory(models=["tiny"], role="decode", itl_ms=100)
    trace_id, _, traceparent = client_context()
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 200, "stream": True}
    with traced_router(collector, [p, d], ["prefill", "decode"]) as r:
        with httpx.stream(
            "POST",
            r.url + "/v1/completions",
            json=body,
            headers={"traceparent": traceparent},
            timeout=30,
        ) as resp:
            chunks = resp.iter_raw()
            next(chunks)
            next(chunks)
        # the client closed the connection after two chunks of a 20 s stream
        trace = collector.wait_for_trace(
            trace_id, lambda t: bool(t.named("POST /v1/completions") and t.named("decode"))
        )
    root, decode = trace.one("POST /v1/completions"), trace.one("decode")
    assert root.attributes["pdstack.outcome"] == "cancelled"
    assert decode.attributes["pdstack.outcome"] == "cancelled"
    assert decode.end_ns - decode.start_ns < 10e9  # ended at the disconnect, not the stream's end


def test_unsampled_client_trace_is_not_recorded_and_engines_are_told(
    collector: Collector, fake_engine_factory: Any
) -> None:
    engine = fake_engine_factory(models=["tiny"])
    dropped, _, unsampled = client_context(sampled=False)
    kept, _, sampled = client_context()
    with traced_router(collector, [engine], ["both"], logic="roundrobin") as r:
        assert chat(r, unsampled, max_tokens=2).status_code == 200
        assert chat(r, sampled, max_tokens=2).status_code == 200
        collector.wait_for_trace(kept, ended("generate"))
    # spans are exported in order: the sampled request's are in, the unsampled one's never came
    assert dropped not in collector.traces()
    first = received(engine, "plain")[0]["traceparent"]
    assert first.split("-")[1] == dropped and first.endswith("-00")


def test_aggregated_request_has_one_generate_span_per_engine_call(
    collector: Collector, fake_engine_factory: Any
) -> None:
    engine = fake_engine_factory(models=["tiny"])
    with traced_router(
        collector, [engine], ["both"], "--log-format", "json", "--log-requests", logic="roundrobin"
    ) as r:
        resp = chat(r, None, max_tokens=3)  # no client context: the router starts the trace
        assert resp.status_code == 200
        trace_id = received(engine, "plain")[0]["traceparent"].split("-")[1]
        trace = collector.wait_for_trace(trace_id, ended("generate"))
        log = r.log_text()
    root = trace.one(ROOT)
    assert root.parent_id == ""
    (generate,) = trace.children(root)[1:]
    assert [s.name for s in trace.children(root)] == ["schedule", "generate"]
    assert generate.attributes["gen_ai.response.finish_reasons"] == ["length"]
    assert generate.attributes["gen_ai.usage.output_tokens"] == 3
    assert trace.one("schedule").attributes["pdstack.schedule.decision"] == "aggregated"
    access = [json.loads(x) for x in log.splitlines() if '"pdrouter.access"' in x]
    assert access and access[-1]["trace_id"] == trace_id
    assert access[-1]["outcome"] == "ok" and access[-1]["api"] == "chat"


def test_without_tracing_the_clients_context_goes_to_the_engine_untouched(
    fake_engine_factory: Any,
) -> None:
    engine = fake_engine_factory(models=["tiny"])
    _, _, traceparent = client_context()
    args = [*static_args([engine]), "--routing-logic", "roundrobin", "--log-requests"]
    with RouterProcess(args).start() as r:
        assert chat(r, traceparent, max_tokens=2).status_code == 200
        log = r.log_text()
    assert received(engine, "plain")[0]["traceparent"] == traceparent
    assert "trace_id=" not in log


def test_a_protocol_the_router_cannot_speak_stops_it_at_start(fake_engine_factory: Any) -> None:
    engine = fake_engine_factory(models=["tiny"])
    args = [*static_args([engine]), "--otlp-traces-endpoint", "http://127.0.0.1:1"]
    router = RouterProcess(args, env={"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"})
    with pytest.raises(RuntimeError, match="OTEL_EXPORTER_OTLP_TRACES_PROTOCOL='http/json'"):
        router.start()
