"""The ``GET /metrics`` endpoint: prometheus-client's own WSGI server, in a daemon thread.

It serves the default registry (Parley's metrics, the ``grpc_server_*`` ones, and
prometheus-client's process and Python collectors) in the Prometheus text format, or
OpenMetrics when the scraper asks for it. It runs beside the gRPC server, on its own port
(``PARLEY_METRICS_LISTEN``), so a scrape never queues behind RPCs on the event loop.
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server

__all__ = ["MetricsEndpoint"]


class MetricsEndpoint:
    """A started ``/metrics`` HTTP server; ``port`` is the bound port (useful with port 0)."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.host: str = str(server.server_address[0])
        self.port: int = int(server.server_address[1])

    @classmethod
    def start(cls, host: str, port: int) -> MetricsEndpoint:
        """Bind ``host:port`` and serve. Raises ``OSError`` when the address cannot be bound."""
        server, thread = start_http_server(port, addr=host)
        return cls(server, thread)

    def stop(self) -> None:
        """Stop serving and close the socket (waits for the serving thread, at most 5 s)."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5.0)
