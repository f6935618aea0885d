"""The spans of one request, built with the real SDK and read from its in-memory exporter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode
from pdrouter.discovery.endpoint import Role
from pdrouter.pd import errors as pd_errors
from pdrouter.proxy.context import ClientRequest
from pdrouter.proxy.errors import RouterError
from pdrouter.scheduling.request import RequestFeatures
from pdrouter.tracing.logs import current_trace_id
from pdrouter.tracing.spans import RequestTrace, RequestTracer

from tests.router.helpers import engine

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
PREFILL = engine("p1", Role.PREFILL)
PREFILL2 = engine("p2", Role.PREFILL)
DECODE = engine("d1", Role.DECODE)
STREAM = [
    b'data: {"id":"cmpl-1","model":"tiny","choices":[{"text":"a","finish_reason":null}]}\n\n',
    b'data: {"id":"cmpl-1","choices":[{"text":"b","finish_reason":"length"}]}\n\n',
    b"data: [DONE]\n\n",
]


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    yield InMemorySpanExporter()


def tracer(exporter: InMemorySpanExporter, **provider_args: Any) -> RequestTracer:
    provider = TracerProvider(**provider_args)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return RequestTracer(provider.get_tracer("test"))


def request(forward: dict[str, str] | None = None, stream: bool = True) -> ClientRequest:
    payload = {"model": "tiny", "prompt": "hi", "max_tokens": 2, "temperature": 0.5, "n": 1}
    return ClientRequest(
        api="completions",
        path="/v1/completions",
        body=orjson.dumps(payload),
        payload=payload,
        model="tiny",
        stream=stream,
        request_id="req-1",
        forward_headers=dict(forward or {}),
        features=RequestFeatures(model="tiny", session=None, prompt="hi"),
        arrived=0.0,
    )


def by_name(exporter: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    spans: dict[str, list[ReadableSpan]] = {}
    for span in exporter.get_finished_spans():
        spans.setdefault(span.name, []).append(span)
    return spans


async def relay(trace: RequestTrace, chunks: list[bytes], take: int | None = None) -> list[bytes]:
    closed: list[bool] = []

    async def source() -> AsyncIterator[bytes]:
        try:
            for chunk in chunks:
                yield chunk
        finally:
            closed.append(True)

    watched = trace.watch(source())
    got = []
    async for chunk in watched:
        got.append(chunk)
        if take is not None and len(got) == take:
            break
    await watched.aclose()  # what the endpoint does when the client goes away
    assert closed == [True], "closing the watcher must close the engine's stream"
    return got


def test_client_context_is_continued_and_engines_get_ours(exporter: InMemorySpanExporter) -> None:
    req = request(
        {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01", "tracestate": "vendor=opaque"}
    )
    tracer(exporter).start(req)
    assert req.trace is not None
    assert current_trace_id.get() == CLIENT_TRACE
    req.trace.end("ok", None)
    (root,) = exporter.get_finished_spans()
    assert root.kind is SpanKind.SERVER and root.name == "POST /v1/completions"
    assert root.parent is not None and format(root.parent.span_id, "016x") == CLIENT_SPAN
    assert format(root.context.trace_id, "032x") == CLIENT_TRACE
    assert req.forward_headers["traceparent"] == (
        f"00-{CLIENT_TRACE}-{format(root.context.span_id, '016x')}-01"
    )
    assert req.forward_headers["tracestate"] == "vendor=opaque"
    assert root.attributes is not None
    assert root.attributes["gen_ai.operation.name"] == "text_completion"
    assert root.attributes["gen_ai.request.max_tokens"] == 2
    assert root.attributes["gen_ai.request.temperature"] == 0.5
    assert "gen_ai.request.choice.count" not in root.attributes  # n == 1
    assert root.attributes["pdstack.request.id"] == "req-1"


@pytest.mark.parametrize(
    "bad", ["00-zz-xx-01", f"ff-{CLIENT_TRACE}-{CLIENT_SPAN}-01", f"00-{'0' * 32}-{CLIENT_SPAN}-01"]
)
def test_a_malformed_client_context_starts_a_new_trace(
    exporter: InMemorySpanExporter, bad: str
) -> None:
    req = request({"traceparent": bad})
    tracer(exporter).start(req)
    assert req.trace is not None
    req.trace.end("ok", None)
    (root,) = exporter.get_finished_spans()
    assert root.parent is None
    assert format(root.context.trace_id, "032x") != CLIENT_TRACE
    assert req.forward_headers["traceparent"].split("-")[1] == format(root.context.trace_id, "032x")


def test_unsampled_request_records_nothing_but_tells_the_engines(
    exporter: InMemorySpanExporter,
) -> None:
    req = request({"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"})
    tracer(exporter, sampler=ALWAYS_OFF).start(req)
    assert req.trace is None
    assert exporter.get_finished_spans() == ()
    assert req.forward_headers["traceparent"].startswith(f"00-{CLIENT_TRACE}-")
    assert req.forward_headers["traceparent"].endswith("-00")  # engines drop theirs too
    assert current_trace_id.get() == CLIENT_TRACE


def test_pd_request_with_a_retried_prefill(exporter: InMemorySpanExporter) -> None:
    req = request()
    tracer(exporter).start(req)
    trace = req.trace
    assert trace is not None
    trace.scheduled(
        "disaggregated",
        "least_loaded",
        {"prefill": [PREFILL, PREFILL2], "decode": [DECODE]},
        {"prefill": PREFILL, "decode": DECODE},
    )
    headers: dict[str, str] = {}
    trace.open_leg("prefill", PREFILL, 0)
    trace.inject(headers)
    first_parent = headers["traceparent"]
    trace.leg_status(503)
    trace.fail_leg("prefill engine p1 answered HTTP 503: busy")
    trace.open_leg("prefill", PREFILL2, 1)
    trace.inject(headers)
    second_parent = headers["traceparent"]
    trace.leg_status(200)
    kv = {"remote_engine_id": "e-2", "remote_block_ids": [[1, 2, 3]], "remote_port": 5600}
    trace.prefill_done(kv, cached_tokens=4)
    trace.handoff_to("nixl")
    trace.open_leg("decode", DECODE, 0)
    trace.inject(headers)
    decode_parent = headers["traceparent"]
    trace.leg_status(200)
    assert asyncio.run(relay(trace, STREAM)) == STREAM
    trace.end("ok", None)

    spans = by_name(exporter)
    assert sorted(spans) == ["POST /v1/completions", "decode", "kv_handoff", "prefill", "schedule"]
    root = spans["POST /v1/completions"][0]
    assert all(
        s.parent is not None and s.parent.span_id == root.context.span_id
        for name, group in spans.items()
        if name != root.name
        for s in group
    )
    schedule = spans["schedule"][0].attributes or {}
    assert schedule["pdstack.schedule.prefill_candidates"] == ("p1", "p2")
    assert schedule["pdstack.schedule.prefill_engine"] == "p1"
    assert schedule["pdstack.schedule.reason"] == "least_loaded"
    assert schedule["pdstack.schedule.decision"] == "disaggregated"

    failed, ok = sorted(spans["prefill"], key=lambda s: (s.attributes or {})["pdstack.attempt"])
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "prefill engine p1 answered HTTP 503: busy"
    assert (failed.attributes or {})["error.type"] == "503"
    assert (failed.attributes or {})["pdstack.engine"] == "p1"
    assert (failed.attributes or {})["server.address"] == "p1"
    assert (failed.attributes or {})["server.port"] == 8000
    assert first_parent.split("-")[2] == format(failed.context.span_id, "016x")
    assert ok.status.status_code is StatusCode.UNSET
    assert (ok.attributes or {})["pdstack.attempt"] == 2
    assert (ok.attributes or {})["gen_ai.usage.cache_read.input_tokens"] == 4
    assert second_parent.split("-")[2] == format(ok.context.span_id, "016x")

    handoff = spans["kv_handoff"][0]
    assert handoff.attributes is not None
    assert handoff.attributes["pdstack.kv.remote_blocks"] == 1
    assert handoff.attributes["pdstack.kv.transport"] == "nixl"
    decode = spans["decode"][0]
    assert decode_parent.split("-")[2] == format(decode.context.span_id, "016x")
    assert ok.end_time is not None and handoff.start_time is not None
    assert ok.end_time <= handoff.start_time
    assert handoff.end_time is not None and decode.start_time is not None
    assert handoff.end_time <= decode.start_time
    assert decode.kind is SpanKind.CLIENT
    assert decode.attributes is not None
    assert decode.attributes["gen_ai.response.finish_reasons"] == ("length",)
    assert decode.attributes["pdstack.stream.chunks"] == 3
    assert decode.attributes["gen_ai.response.time_to_first_chunk"] >= 0
    assert root.attributes is not None
    assert root.attributes["http.response.status_code"] == 200
    assert root.attributes["pdstack.outcome"] == "ok"


def test_decode_failure_after_the_first_byte_is_on_the_decode_span(
    exporter: InMemorySpanExporter,
) -> None:
    req = request()
    tracer(exporter).start(req)
    trace = req.trace
    assert trace is not None
    trace.open_leg("decode", DECODE, 0)
    asyncio.run(relay(trace, STREAM[:1]))
    err = pd_errors.failed("decode", "decode engine d1 broke off")
    trace.end("error", err)
    spans = by_name(exporter)
    decode, root = spans["decode"][0], spans["POST /v1/completions"][0]
    assert decode.status.status_code is StatusCode.ERROR
    assert (decode.attributes or {})["error.type"] == pd_errors.DECODE_FAILED
    assert root.status.status_code is StatusCode.ERROR
    assert root.attributes is not None
    assert root.attributes["pdstack.pd.error_reason"] == pd_errors.DECODE_FAILED
    assert root.attributes["pdstack.pd.error_phase"] == "decode"
    assert root.attributes["http.response.status_code"] == 200  # the stream had started


def test_client_gone_mid_stream_ends_every_span(exporter: InMemorySpanExporter) -> None:
    req = request()
    tracer(exporter).start(req)
    trace = req.trace
    assert trace is not None
    trace.open_leg("decode", DECODE, 0)

    async def disconnect() -> None:
        watched = trace.watch(_slow(STREAM))
        async for _ in watched:
            break
        trace.end("cancelled", None)  # the endpoint ends the spans, then closes the stream
        await watched.aclose()

    asyncio.run(disconnect())
    spans = by_name(exporter)
    assert sorted(spans) == ["POST /v1/completions", "decode"]
    for group in spans.values():
        assert (group[0].attributes or {})["pdstack.outcome"] == "cancelled"


def test_client_errors_are_not_server_errors(exporter: InMemorySpanExporter) -> None:
    req = request()
    tracer(exporter).start(req)
    assert req.trace is not None
    req.trace.end("error", RouterError(400, "bad", type="invalid_request_error", code="x"))
    (root,) = exporter.get_finished_spans()
    assert root.status.status_code is StatusCode.UNSET
    assert (root.attributes or {})["error.type"] == "x"
    assert (root.attributes or {})["http.response.status_code"] == 400


async def _slow(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        await asyncio.sleep(0)
        yield chunk


class _Writer:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def paused(self) -> bool:
        return False

    async def drain(self) -> None:
        return None


class _Push:
    """A push stream double: writes a whole stream to the client writer it is given."""

    async def run(self, writer: Any) -> RouterError | None:
        for chunk in STREAM:
            writer.write(chunk)
        return None


def test_a_pushed_stream_is_seen_on_its_way_to_the_client(exporter: InMemorySpanExporter) -> None:
    req = request()
    tracer(exporter).start(req)
    trace = req.trace
    assert trace is not None
    trace.open_leg("decode", DECODE, 0)
    client = _Writer()
    assert asyncio.run(trace.watch_push(_Push()).run(client)) is None
    assert client.data == b"".join(STREAM)
    trace.end("ok", None)
    decode = by_name(exporter)["decode"][0]
    assert (decode.attributes or {})["gen_ai.response.finish_reasons"] == ("length",)
    assert (decode.attributes or {})["pdstack.stream.chunks"] == 3
