"""Telemetry of a Parley process: metrics, traces and logs (docs/observability.md).

``setup`` (``Telemetry``, started by ``serve()``), ``metrics`` (Parley's own ``parley_*``
metrics), ``grpc_metrics`` (``grpc_server_*``, recorded by the request handlers, `api/interceptors.py`),
``storage`` (database and MongoDB latency), ``loop`` (event-loop lag), ``exposition`` (the
``/metrics`` endpoint), ``tracing`` (the tracer provider and instrumentations), ``genai`` (the
spans of runs, model calls, tools and speech), ``logs`` (text or JSON log lines).

Its metric and tracing modules import nothing else of ``parley`` at run time, so any layer may
record into them (``logs`` reads the call's context from ``api`` and ``auth``).
"""

#: Nothing is re-exported here: import from the submodules.
__all__: list[str] = []
