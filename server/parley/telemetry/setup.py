"""What ``serve()`` starts for observability, and stops at shutdown (docs/observability.md).

:meth:`Telemetry.start` reads the settings once:

- ``PARLEY_METRICS_LISTEN`` (default ``127.0.0.1:9464``; empty: off): the ``/metrics`` endpoint,
  the ``grpc_server_*`` metrics of the request handlers, the database and MongoDB latency
  listeners and the event-loop lag monitor. Parley's run, token and speech metrics are counted
  either way (a few per reply), they are only not served without the endpoint.
- tracing (``parley.telemetry.tracing``): the tracer provider, the RPC span interceptor, and the
  SQLAlchemy and PyMongo instrumentations.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from pymongo import monitoring

from parley.telemetry import tracing
from parley.telemetry.exposition import MetricsEndpoint
from parley.telemetry.grpc_metrics import GrpcServerMetrics
from parley.telemetry.loop import LoopLagMonitor
from parley.telemetry.storage import CommandTimer, instrument_engine

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from sqlalchemy.ext.asyncio import AsyncEngine

    from parley.config import Settings

__all__ = ["Telemetry"]

log = logging.getLogger("parley")


class Telemetry:
    """The process's metrics endpoint, tracer provider and instrumentations.

    Attributes:
        grpc_metrics: what the request handlers record ``grpc_server_*`` metrics into (None:
            metrics are off).
        metrics: the running ``/metrics`` endpoint, if any (``metrics.port``: the bound port).
        tracer_provider: the SDK's tracer provider, if tracing is on.
    """

    def __init__(
        self,
        metrics: MetricsEndpoint | None,
        loop_lag: LoopLagMonitor | None,
        tracer_provider: TracerProvider | None,
        *,
        metrics_on: bool,
    ) -> None:
        self.metrics = metrics
        self._loop_lag = loop_lag
        self.tracer_provider = tracer_provider
        self.grpc_metrics = GrpcServerMetrics() if metrics_on else None

    @classmethod
    def start(cls, settings: Settings) -> Telemetry:
        """Start what ``settings`` switch on (in the running event loop).

        Raises ``OSError`` when an explicitly set ``PARLEY_METRICS_LISTEN`` cannot be bound (the
        default one, when taken, is logged and skipped: another Parley on this machine has it).
        """
        endpoint: MetricsEndpoint | None = None
        address = settings.metrics_address
        if address is not None:
            try:
                endpoint = MetricsEndpoint.start(*address)
            except OSError as exc:
                if "metrics_listen" in settings.model_fields_set:
                    raise OSError(f"PARLEY_METRICS_LISTEN={settings.metrics_listen}: {exc}") from exc
                log.error("metrics endpoint not started: cannot bind %s: %s", settings.metrics_listen, exc)
            else:
                log.info(
                    "serving metrics on http://%s:%d/metrics (port %d)",
                    endpoint.host,
                    endpoint.port,
                    endpoint.port,
                )
        loop_lag = None
        if endpoint is not None:
            loop_lag = LoopLagMonitor(
                interval_s=settings.loop_lag_interval_s, window_s=settings.loop_lag_window_s
            )
            loop_lag.start()
        provider = tracing.start_tracing(settings)
        if provider is not None:
            log.info(
                "exporting traces over OTLP (%s)", settings.otlp_traces_protocol or settings.otlp_protocol
            )
        return cls(endpoint, loop_lag, provider, metrics_on=endpoint is not None)

    def server_interceptors(self) -> list[Any]:
        """The server's interceptors (the RPC span, when tracing): each wraps the request handlers."""
        if self.tracer_provider is None:
            return []
        return [tracing.server_interceptor(self.tracer_provider)]

    def instrument_database(self, engine: AsyncEngine) -> None:
        """Statement latency (metrics on) and spans (tracing on) of ``engine``."""
        if self.grpc_metrics is not None:
            instrument_engine(engine.sync_engine)
        if self.tracer_provider is not None:
            tracing.instrument_engine(self.tracer_provider, engine.sync_engine)

    def mongo_listeners(self) -> list[monitoring.CommandListener]:
        """Command listeners for the MongoDB client (latency, when metrics are on). Call before the
        client is created: tracing registers PyMongo's global listeners here too."""
        if self.tracer_provider is not None:
            tracing.instrument_pymongo(self.tracer_provider)
        return [CommandTimer()] if self.grpc_metrics is not None else []

    async def aclose(self) -> None:
        """Stop the endpoint and the monitor; flush and shut down the tracer provider."""
        if self._loop_lag is not None:
            await self._loop_lag.stop()
        if self.metrics is not None:
            await asyncio.to_thread(self.metrics.stop)
        if self.tracer_provider is not None:
            await asyncio.to_thread(self.tracer_provider.shutdown)
