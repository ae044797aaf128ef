"""OpenTelemetry traces: the SDK's tracer provider, its OTLP exporter, and the instrumentations.

Off unless ``Settings.tracing_enabled`` (``PARLEY_TRACING=true``, or
``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` set). Then:

- a ``TracerProvider`` becomes the global one, with the resource ``service.name=parley`` (unless
  ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` say otherwise), a ``BatchSpanProcessor``
  (``OTEL_BSP_*``) and an OTLP exporter: http/protobuf by default, gRPC with
  ``OTEL_EXPORTER_OTLP_PROTOCOL=grpc`` (the opentelemetry-exporter-otlp-proto-grpc package must be
  installed). Sampling is the SDK's (``OTEL_TRACES_SAMPLER``; default: parent-based, always on);
  propagation is W3C ``traceparent`` (``OTEL_PROPAGATORS``).
- every RPC gets a SERVER span from opentelemetry-instrumentation-grpc's asyncio server
  interceptor, whose parent is the caller's ``traceparent`` metadata (health and reflection are
  not traced);
- SQL statements (opentelemetry-instrumentation-sqlalchemy, on the engine) and MongoDB commands
  (opentelemetry-instrumentation-pymongo; statements not captured) are CLIENT spans of whatever
  span is current;
- Parley's own spans (``parley.telemetry.genai``) show runs, model calls, tools and speech.

The OpenTelemetry SDK reads its ``OTEL_*`` variables from the environment itself; ``Settings``
reads only the ones that switch tracing on or pick the exporter.
"""

from __future__ import annotations

import importlib.metadata
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from sqlalchemy.engine import Engine

    from parley.config import Settings

__all__ = [
    "UNTRACED_SERVICES",
    "instrument_engine",
    "instrument_pymongo",
    "server_interceptor",
    "start_tracing",
]

#: Prefixes of the gRPC services whose calls get no span: health (Envoy checks every replica every
#: few seconds) and reflection.
UNTRACED_SERVICES = ("grpc.health.", "grpc.reflection.")


def _resource() -> Any:
    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, OTELResourceDetector, Resource

    try:
        version = importlib.metadata.version("parley")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree
        version = "0"
    ours = Resource.create({SERVICE_NAME: "parley", SERVICE_VERSION: version})
    return ours.merge(OTELResourceDetector().detect())  # OTEL_SERVICE_NAME and friends win


def _exporter(settings: Settings) -> SpanExporter:
    protocol = settings.otlp_traces_protocol or settings.otlp_protocol
    if protocol == "grpc":
        try:  # an optional package (not a dependency)
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
                OTLPSpanExporter as GrpcExporter,
            )
        except ImportError as exc:
            raise ValueError(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs the opentelemetry-exporter-otlp-proto-grpc package"
            ) from exc
        exporter: SpanExporter = GrpcExporter(
            endpoint=settings.otlp_traces_endpoint or settings.otlp_endpoint or None
        )
        return exporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    endpoint = settings.otlp_traces_endpoint or (
        f"{settings.otlp_endpoint.rstrip('/')}/v1/traces" if settings.otlp_endpoint else None
    )
    return OTLPSpanExporter(endpoint=endpoint)


def start_tracing(settings: Settings) -> TracerProvider | None:
    """Install the SDK's tracer provider as the global one (see the module docstring) and return
    it, or None when tracing is off. Call once per process; shut the provider down at exit (it
    flushes the spans still queued)."""
    if not settings.tracing_enabled:
        return None
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=_resource())
    provider.add_span_processor(BatchSpanProcessor(_exporter(settings)))
    trace.set_tracer_provider(provider)
    return provider


def server_interceptor(provider: TracerProvider) -> Any:
    """The asyncio gRPC server interceptor that makes a SERVER span per RPC (not for
    :data:`UNTRACED_SERVICES`); it goes first in the server's interceptors, so the request
    interceptor's error mapping runs inside the span."""
    from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

    untraced = filters.any_of(*(filters.service_prefix(prefix) for prefix in UNTRACED_SERVICES))
    return aio_server_interceptor(  # type: ignore[no-untyped-call]
        tracer_provider=provider, filter_=filters.negate(untraced)
    )


def instrument_engine(provider: TracerProvider, engine: Engine) -> None:
    """A CLIENT span per SQL statement of ``engine`` (an async engine's ``sync_engine``). The
    statement text is recorded with its placeholders, never the bound values.

    The instrumentation declares SQLAlchemy ``< 2.1`` and would do nothing on 2.1; it only
    listens to engine events (``before_cursor_execute`` ...), which 2.1 keeps, so its version
    check is skipped (tests/telemetry/test_traces.py checks the spans arrive)."""
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    SQLAlchemyInstrumentor().instrument(
        engine=engine, tracer_provider=provider, enable_commenter=False, skip_dep_check=True
    )


def instrument_pymongo(provider: TracerProvider) -> None:
    """A CLIENT span per MongoDB command of every client created after this call (PyMongo's
    global command listeners), without the command documents."""
    from opentelemetry.instrumentation.pymongo import PymongoInstrumentor

    PymongoInstrumentor().instrument(tracer_provider=provider, capture_statement=False)
