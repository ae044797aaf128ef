"""In-process checks of what keeps the metrics' label sets bounded and the recording cheap (no
server: these are the functions the server calls)."""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc
from parley.telemetry import metrics
from parley.telemetry.grpc_metrics import GrpcServerMetrics
from parley.telemetry.loop import LoopLagMonitor
from parley.telemetry.storage import _operation
from prometheus_client import REGISTRY


def test_model_labels_are_cut_off_after_max_models() -> None:
    names = [f"prov/model-{uuid.uuid4().hex}" for _ in range(metrics.MAX_MODELS + 1)]
    labels = [metrics.model_labels(name) for name in names]
    kept = [label for label in labels if label[1] != "other"]
    assert len(kept) <= metrics.MAX_MODELS
    assert labels[-1] == ("prov", "other")  # the set was full by then, whatever came before
    assert metrics.model_labels(names[0]) == labels[0]  # a kept model stays kept


def test_sql_operations_are_a_closed_set() -> None:
    assert _operation("  select 1") == "SELECT"
    assert _operation("WITH RECURSIVE path AS (...) SELECT ...") == "WITH"
    assert _operation("VACUUM") == "OTHER"
    assert _operation("") == "OTHER"


def test_grpc_codes_are_status_code_names_and_method_metrics_are_cached() -> None:
    grpc_metrics = GrpcServerMetrics()
    method = grpc_metrics.method("unary", "/parley.v1.AgentService/GetAgent")
    assert grpc_metrics.method("unary", "/parley.v1.AgentService/GetAgent") is method
    labels = {"grpc_type": "unary", "grpc_service": "parley.v1.AgentService", "grpc_method": "GetAgent"}

    def handled(code: str) -> float:
        return REGISTRY.get_sample_value("grpc_server_handled_total", {**labels, "grpc_code": code}) or 0.0

    before = handled("NOT_FOUND")
    method.started()
    assert REGISTRY.get_sample_value("grpc_server_in_flight_calls", labels) == 1
    method.handled(str(grpc.StatusCode.NOT_FOUND), 0.01, 0)  # "StatusCode.NOT_FOUND"
    assert handled("NOT_FOUND") == before + 1
    assert handled("StatusCode.NOT_FOUND") == 0
    assert REGISTRY.get_sample_value("grpc_server_in_flight_calls", labels) == 0


def test_the_loop_lag_monitor_sees_a_blocked_loop() -> None:
    async def blocked() -> float:
        monitor = LoopLagMonitor(interval_s=0.01)
        monitor.start()
        await asyncio.sleep(0.05)
        time.sleep(0.3)  # noqa: ASYNC251 - hold the loop, as a CPU-bound step on it would
        await asyncio.sleep(0.05)
        await monitor.stop()
        return monitor.max_lag()

    assert asyncio.run(blocked()) >= 0.25
