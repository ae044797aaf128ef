"""gRPC server metrics with the names of the go-grpc-prometheus / py-grpc-prometheus convention.

Recorded by the request handlers (``api/interceptors.py``), which already time every
``parley.v1`` call and know its final code, so a streamed reply costs one integer increment per
event and nothing else (docs/observability.md says why this is not grpcio-observability):

=====================================  =========  ==============================================
``grpc_server_started_total``          counter    calls started
``grpc_server_handled_total``          counter    calls finished, by ``grpc_code``
``grpc_server_handling_seconds``       histogram  call duration (a stream: until its last event)
``grpc_server_msg_received_total``     counter    request messages (one per call: no client streams)
``grpc_server_msg_sent_total``         counter    response messages (a stream's events)
``grpc_server_in_flight_calls``        gauge      calls (streams) in progress now
=====================================  =========  ==============================================

Labels: ``grpc_type`` (``unary`` or ``server_stream``), ``grpc_service``
(``parley.v1.ChatService``), ``grpc_method`` (``SendMessage``), and ``grpc_code`` on
``handled`` (the status code's name: ``OK``, ``NOT_FOUND``, ``CANCELLED`` ...). Only Parley's own
methods are counted: health checks and reflection are grpcio's servicers, which the interceptor
does not wrap.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = ["GrpcServerMetrics", "MethodMetrics"]

#: Call durations: 5 ms (a cached GetAgent) to 5 minutes (a long streamed reply).
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_LABELS = ("grpc_type", "grpc_service", "grpc_method")

_STARTED = Counter("grpc_server_started", "RPCs started on the server.", _LABELS)
_HANDLED = Counter(
    "grpc_server_handled",
    "RPCs completed on the server, regardless of success or failure.",
    (*_LABELS, "grpc_code"),
)
_HANDLING = Histogram(
    "grpc_server_handling_seconds",
    "Seconds from the start of an RPC to its end (a stream: its last event or error).",
    _LABELS,
    buckets=_BUCKETS,
)
_RECEIVED = Counter("grpc_server_msg_received", "RPC request messages received on the server.", _LABELS)
_SENT = Counter("grpc_server_msg_sent", "RPC response messages (stream events) sent by the server.", _LABELS)
_IN_FLIGHT = Gauge(
    "grpc_server_in_flight_calls", "RPCs in progress on the server (open streams included).", _LABELS
)


class MethodMetrics:
    """The label children of one method (looked up once per method, not per call)."""

    __slots__ = ("_handled", "_handling", "_in_flight", "_labels", "_received", "_sent", "_started")

    def __init__(self, grpc_type: str, full_method: str) -> None:
        service, _, method = full_method.strip("/").partition("/")
        self._labels = (grpc_type, service, method)
        self._started = _STARTED.labels(*self._labels)
        self._handling = _HANDLING.labels(*self._labels)
        self._received = _RECEIVED.labels(*self._labels)
        self._sent = _SENT.labels(*self._labels)
        self._in_flight = _IN_FLIGHT.labels(*self._labels)
        self._handled: dict[str, Counter] = {}

    def started(self) -> None:
        """A call of this method began (its request message arrived)."""
        self._started.inc()
        self._received.inc()
        self._in_flight.inc()

    def handled(self, code: str, seconds: float, sent: int) -> None:
        """The call ended with status ``code`` (a ``grpc.StatusCode`` name, or its ``str()``)
        after ``seconds``, having sent ``sent`` response messages."""
        self._in_flight.dec()
        self._handling.observe(seconds)
        if sent:
            self._sent.inc(sent)
        code = code.removeprefix("StatusCode.")
        counter = self._handled.get(code)
        if counter is None:
            counter = self._handled[code] = _HANDLED.labels(*self._labels, code)
        counter.inc()


class GrpcServerMetrics:
    """Hands out :class:`MethodMetrics` per method and call type, cached (methods are the
    registered ones, so the cache is bounded)."""

    def __init__(self) -> None:
        self._methods: dict[tuple[str, str], MethodMetrics] = {}

    def method(self, grpc_type: str, full_method: str) -> MethodMetrics:
        """The metrics of ``full_method`` (``/parley.v1.ChatService/SendMessage``) called as
        ``grpc_type`` (``unary`` or ``server_stream``)."""
        key = (grpc_type, full_method)
        found = self._methods.get(key)
        if found is None:
            found = self._methods[key] = MethodMetrics(grpc_type, full_method)
        return found
