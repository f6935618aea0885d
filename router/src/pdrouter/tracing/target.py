"""Whether tracing is on and where spans go, from the router's flag and the standard OTEL_* vars.

Pure: reads a mapping of environment variables, imports nothing of OpenTelemetry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

PROTOCOLS = ("grpc", "http/protobuf")
# vLLM's exporter defaults to gRPC; the router does too, so one endpoint serves both.
DEFAULT_PROTOCOL = "grpc"


@dataclass(frozen=True, slots=True)
class ExportTarget:
    """Where the router exports spans. `endpoint` None: the exporter reads the OTEL_* endpoint."""

    protocol: str
    endpoint: str | None


def _set(environ: Mapping[str, str], name: str) -> str:
    return environ.get(name, "").strip()


def export_target(flag_endpoint: str, environ: Mapping[str, str]) -> ExportTarget | None:
    """The OTLP target, or None when tracing is off.

    On when `--otlp-traces-endpoint` is given or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT /
    OTEL_EXPORTER_OTLP_ENDPOINT is set; OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none
    turn it off. Raises ValueError naming a protocol the router cannot speak.
    """
    if _set(environ, "OTEL_SDK_DISABLED").lower() == "true":
        return None
    exporters = _set(environ, "OTEL_TRACES_EXPORTER").lower()
    if exporters == "none":
        return None
    if exporters and exporters != "otlp":
        raise ValueError(f"OTEL_TRACES_EXPORTER={exporters!r}: the router exports only 'otlp'")
    from_env = _set(environ, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or _set(
        environ, "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if not flag_endpoint and not from_env:
        return None
    var = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
    protocol = _set(environ, var)
    if not protocol:
        var = "OTEL_EXPORTER_OTLP_PROTOCOL"
        protocol = _set(environ, var) or DEFAULT_PROTOCOL
    if protocol not in PROTOCOLS:
        raise ValueError(f"{var}={protocol!r}: the router exports with grpc or http/protobuf")
    return ExportTarget(protocol, flag_endpoint or None)
