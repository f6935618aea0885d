"""When tracing is on, and where spans go (flag and OTEL_* variables; no SDK)."""

from __future__ import annotations

import pytest
from pdrouter.tracing.target import ExportTarget, export_target


def test_off_by_default() -> None:
    assert export_target("", {}) is None


def test_flag_turns_it_on_with_grpc_like_vllm() -> None:
    assert export_target("http://c:4317", {}) == ExportTarget("grpc", "http://c:4317")


@pytest.mark.parametrize(
    "env",
    [{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "x"}],
)
def test_standard_endpoint_variables_turn_it_on_and_the_exporter_reads_them(
    env: dict[str, str],
) -> None:
    assert export_target("", env) == ExportTarget("grpc", None)


def test_signal_protocol_wins_over_the_generic_one() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
    }
    assert export_target("http://c:4318/v1/traces", env) == ExportTarget(
        "http/protobuf", "http://c:4318/v1/traces"
    )


@pytest.mark.parametrize("env", [{"OTEL_SDK_DISABLED": "true"}, {"OTEL_TRACES_EXPORTER": "none"}])
def test_standard_switches_turn_it_off(env: dict[str, str]) -> None:
    assert export_target("http://c:4317", env) is None


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL='http/json'"),
        ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "udp"}, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL='udp'"),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER='zipkin'"),
    ],
)
def test_what_the_router_cannot_do_is_an_error_naming_the_variable(
    env: dict[str, str], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        export_target("http://c:4317", env)
