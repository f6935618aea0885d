"""A real OpenTelemetry Collector for the tracing tests: OTLP in (gRPC and HTTP), JSON lines out.

    binary = ensure_collector()                  # built once by scripts/install-otelcol.sh
    with Collector(binary, tmp_path).start() as col:
        ... point the router / vLLM at col.grpc_endpoint or col.http_traces_endpoint ...
        trace = col.wait_for_trace(lambda spans: ..., timeout=30)

The collector's file exporter appends every batch it receives to one file as OTLP JSON; `spans()`
reads it back as `Span` records.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
SERVER, CLIENT, INTERNAL = 2, 3, 1  # OTLP SpanKind values
STATUS_ERROR = 2


def ensure_collector() -> Path:
    """Build the collector if needed (instant when cached); return the binary's path.
    $PDSTACK_OTELCOL names a prebuilt one instead (a machine with no Go or network)."""
    prebuilt = os.environ.get("PDSTACK_OTELCOL")
    if prebuilt:
        return Path(prebuilt)
    out = subprocess.run(
        [str(ROOT / "scripts" / "install-otelcol.sh")],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    return Path(out.stdout.strip().splitlines()[-1])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _value(v: dict[str, Any]) -> Any:
    if "stringValue" in v:
        return v["stringValue"]
    if "intValue" in v:
        return int(v["intValue"])
    if "doubleValue" in v:
        return float(v["doubleValue"])
    if "boolValue" in v:
        return bool(v["boolValue"])
    if "arrayValue" in v:
        return [_value(x) for x in v["arrayValue"].get("values", [])]
    return None


def _attrs(items: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {a["key"]: _value(a.get("value", {})) for a in items or []}


@dataclass
class Span:
    """One span as the collector stored it."""

    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    service: str
    attributes: dict[str, Any] = field(default_factory=dict)
    status_code: int = 0
    status_message: str = ""

    @property
    def failed(self) -> bool:
        return self.status_code == STATUS_ERROR


class Trace:
    """The spans of one trace id, with lookups by name and parent."""

    def __init__(self, spans: list[Span]) -> None:
        self.spans = sorted(spans, key=lambda s: s.start_ns)
        self.trace_id = spans[0].trace_id

    def named(self, name: str, service: str | None = None) -> list[Span]:
        return [s for s in self.spans if s.name == name and service in (None, s.service)]

    def one(self, name: str, service: str | None = None) -> Span:
        found = self.named(name, service)
        assert len(found) == 1, f"expected one {name!r} span, got {len(found)}:\n{self}"
        return found[0]

    def children(self, parent: Span) -> list[Span]:
        return [s for s in self.spans if s.parent_id == parent.span_id]

    def tree(self, attributes: bool = False) -> str:
        """The spans as an indented tree: start offset and duration in ms, service, name, and
        ERROR with its message on failed spans (a span whose parent is missing is a root)."""
        ids = {s.span_id for s in self.spans}
        start = self.spans[0].start_ns
        lines: list[str] = []

        def walk(span: Span, depth: int) -> None:
            error = f"  ERROR {span.status_message}" if span.failed else ""
            offset, took = (span.start_ns - start) / 1e6, (span.end_ns - span.start_ns) / 1e6
            indent = "  " * depth
            lines.append(
                f"{offset:8.1f} ms {took:8.1f} ms  {indent}{span.name} [{span.service}]{error}"
            )
            if attributes and span.attributes:
                lines.append(f"{'':24}{indent}  {span.attributes}")
            for child in self.children(span):
                walk(child, depth + 1)

        lines.append(f"   start   duration  span [service]   (trace {self.trace_id})")
        for root in (s for s in self.spans if s.parent_id not in ids):
            walk(root, 0)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.tree(attributes=True)


class Collector:
    """One `otelcol-pdstack` process on free loopback ports, writing to `folder`."""

    def __init__(self, binary: Path, folder: Path) -> None:
        self.binary = binary
        self.folder = folder
        self.grpc_port = _free_port()
        self.http_port = _free_port()
        self.output = folder / "traces.jsonl"
        self.log_path = folder / "otelcol.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def grpc_endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.grpc_port}"

    @property
    def http_traces_endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}/v1/traces"

    def config(self) -> str:
        # The collector's own metrics would listen on :8888 by default; tests run several.
        return json.dumps(
            {
                "receivers": {
                    "otlp": {
                        "protocols": {
                            "grpc": {"endpoint": f"{LOOPBACK}:{self.grpc_port}"},
                            "http": {"endpoint": f"{LOOPBACK}:{self.http_port}"},
                        }
                    }
                },
                "exporters": {"file": {"path": str(self.output), "flush_interval": "100ms"}},
                "service": {
                    "telemetry": {"metrics": {"level": "none"}, "logs": {"level": "warn"}},
                    "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["file"]}},
                },
            }
        )

    def start(self, timeout: float = 30.0) -> Collector:
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "otelcol.json"  # JSON is YAML
        config.write_text(self.config())
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(self.binary), "--config", f"file:{config}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not all(self._listening(p) for p in (self.grpc_port, self.http_port)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"collector did not start:\n{self.log_text()}")
            time.sleep(0.05)
        return self

    def _listening(self, port: int) -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex((LOOPBACK, port)) == 0

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def spans(self) -> list[Span]:
        """Every span received so far."""
        if not self.output.exists():
            return []
        found: list[Span] = []
        for line in self.output.read_text().splitlines():
            if not line.strip():
                continue
            try:
                batch = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line being written right now
            found.extend(_spans_of(batch))
        return found

    def traces(self) -> dict[str, Trace]:
        by_id: dict[str, list[Span]] = defaultdict(list)
        for span in self.spans():
            by_id[span.trace_id].append(span)
        return {tid: Trace(spans) for tid, spans in by_id.items()}

    def wait_for_trace(
        self, trace_id: str, ready: Callable[[Trace], bool], timeout: float = 30.0
    ) -> Trace:
        """The trace `trace_id` once `ready(trace)` holds (spans arrive in batches)."""
        deadline = time.monotonic() + timeout
        while True:
            trace = self.traces().get(trace_id)
            if trace is not None and ready(trace):
                return trace
            if time.monotonic() > deadline:
                raise AssertionError(f"trace {trace_id} incomplete after {timeout}s:\n{trace}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _spans_of(batch: dict[str, Any]) -> Iterator[Span]:
    for rs in batch.get("resourceSpans", []):
        service = _attrs(rs.get("resource", {}).get("attributes")).get("service.name", "")
        for ss in rs.get("scopeSpans", []):
            for s in ss.get("spans", []):
                status = s.get("status", {})
                yield Span(
                    trace_id=s["traceId"],
                    span_id=s["spanId"],
                    parent_id=s.get("parentSpanId", ""),
                    name=s["name"],
                    kind=int(s.get("kind", 0)),
                    start_ns=int(s["startTimeUnixNano"]),
                    end_ns=int(s["endTimeUnixNano"]),
                    service=service,
                    attributes=_attrs(s.get("attributes")),
                    status_code=int(status.get("code", 0)),
                    status_message=status.get("message", ""),
                )
