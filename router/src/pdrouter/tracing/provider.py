"""The OpenTelemetry SDK behind the router's spans: OTLP exporter, batch processor, sampler.

Everything but the endpoint comes from the standard OTEL_* variables, read by the SDK itself:
OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG (default parentbased_always_on), OTEL_SERVICE_NAME
and OTEL_RESOURCE_ATTRIBUTES, OTEL_BSP_* (batching), OTEL_EXPORTER_OTLP_(TRACES_)HEADERS,
_TIMEOUT, _INSECURE, _CERTIFICATE. The SDK is imported here only, and only when tracing is on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from pdrouter import __version__
from pdrouter.tracing.target import ExportTarget

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from pdrouter.tracing.spans import RequestTracer

log = logging.getLogger(__name__)

SERVICE_NAME = "pdstack-router"
# At shutdown: export what is queued, but a collector that is down must not hold the router.
FLUSH_TIMEOUT_MS = 3000
SHUTDOWN_TIMEOUT_S = 5.0


class Tracing:
    """The process's tracer provider and the per-request tracer built on it."""

    def __init__(self, provider: TracerProvider, tracer: RequestTracer) -> None:
        self.provider = provider
        self.tracer = tracer

    def shutdown(self) -> None:
        """Export what is still queued (bounded), then stop the exporter."""
        self.provider.force_flush(FLUSH_TIMEOUT_MS)
        self.provider.shutdown()

    async def close(self) -> None:
        """shutdown() off the event loop (the exporter blocks), given up after a while."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.to_thread(self.shutdown), SHUTDOWN_TIMEOUT_S)


def _exporter(target: ExportTarget) -> SpanExporter:
    if target.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter(endpoint=target.endpoint)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    return HttpExporter(endpoint=target.endpoint)


def build_tracing(target: ExportTarget) -> Tracing:
    """Set up the SDK for `target`; raises ValueError when the otel extra is not installed."""
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        from pdrouter.tracing.spans import RequestTracer
    except ImportError as exc:
        raise ValueError(
            "tracing is configured (an OTLP endpoint is set) but OpenTelemetry is not "
            f"installed ({exc.name}): pip install 'pdstack-router[otel]'"
        ) from None
    resource = Resource.create({"service.version": __version__})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    # The sampler comes from OTEL_TRACES_SAMPLER. Not set as the global provider: FastAPI would
    # then trace every probe of /health and scrape of /metrics too.
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(_exporter(target)))
    log.info(
        "tracing on: OTLP/%s to %s, sampler %s",
        target.protocol,
        target.endpoint or "the OTEL_EXPORTER_OTLP_* endpoint",
        provider.sampler.get_description(),
    )
    return Tracing(provider, RequestTracer(provider.get_tracer("pdrouter", __version__)))
