"""A real OTLP/HTTP trace receiver on loopback, for tests: what a collector's ``otlp`` receiver does
with ``POST /v1/traces`` (protobuf ``ExportTraceServiceRequest``, optionally gzip), minus the
forwarding. Spans are kept in memory, decoded into :class:`ReceivedSpan` records.

    with running_otlp_receiver() as receiver:
        ...  # a server with OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint
        spans = receiver.wait_for(lambda spans: any(s.name == "invoke_agent" for s in spans))
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

__all__ = ["OtlpReceiver", "ReceivedSpan", "running_otlp_receiver"]


def _value(value: common_pb2.AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


@dataclass(frozen=True)
class ReceivedSpan:
    """One exported span: ids as lower-case hex (``parent_span_id`` ``""`` for a root)."""

    name: str
    kind: str  # SPAN_KIND_SERVER, SPAN_KIND_CLIENT, SPAN_KIND_INTERNAL ...
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    status_code: str  # STATUS_CODE_UNSET, STATUS_CODE_OK, STATUS_CODE_ERROR
    resource: dict[str, Any] = field(default_factory=dict)
    scope: str = ""


@dataclass
class OtlpReceiver:
    """The receiver's address and what it has received so far."""

    endpoint: str  # the OTEL_EXPORTER_OTLP_ENDPOINT value: http://127.0.0.1:PORT
    spans: list[ReceivedSpan] = field(default_factory=list)
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> list[ReceivedSpan]:
        with self.lock:
            return list(self.spans)

    def wait_for(
        self, done: Callable[[list[ReceivedSpan]], bool], timeout: float = 30.0
    ) -> list[ReceivedSpan]:
        """Every span received, once ``done(spans)`` holds (spans arrive in batches, after the
        exporter's schedule delay). Raises ``AssertionError`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.snapshot()
            if done(spans):
                return spans
            if time.monotonic() > deadline:
                names = sorted({s.name for s in spans})
                raise AssertionError(f"the spans awaited did not arrive; got {len(spans)}: {names}")
            time.sleep(0.05)

    def add(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        received = []
        for resource_spans in request.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            name=span.name,
                            kind=trace_pb2.Span.SpanKind.Name(span.kind),
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes={kv.key: _value(kv.value) for kv in span.attributes},
                            status_code=trace_pb2.Status.StatusCode.Name(span.status.code),
                            resource=resource,
                            scope=scope_spans.scope.name,
                        )
                    )
        with self.lock:
            self.spans.extend(received)
            self.requests += 1


@contextmanager
def running_otlp_receiver() -> Iterator[OtlpReceiver]:
    """Serve ``POST /v1/traces`` on a free loopback port for the ``with`` block."""
    receiver: OtlpReceiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path != "/v1/traces":
                self.send_error(404)
                return
            request = trace_service_pb2.ExportTraceServiceRequest()
            request.ParseFromString(body)
            receiver.add(request)
            reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver = OtlpReceiver(f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, name="otlp receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
