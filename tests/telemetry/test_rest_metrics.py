"""``GET /metrics`` through Envoy only when the config is rendered with a metrics upstream
(``PARLEY_REST_METRICS=true`` in scripts/run_stack.py), and Envoy's own metrics on its admin
interface (``/stats/prometheus``), both with a real Envoy in front of a real server."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.envoy import EnvoyProcess, render_module
from tests.support.server import ServerProcess


@pytest.fixture(scope="module")
def envoys(
    telemetry_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[EnvoyProcess, EnvoyProcess]]:
    work = tmp_path_factory.mktemp("envoy-metrics")
    with_metrics = EnvoyProcess(
        telemetry_server.target, work, metrics_upstream=("127.0.0.1", telemetry_server.metrics_port)
    ).start()
    without = EnvoyProcess(telemetry_server.target, work).start()
    yield with_metrics, without
    with_metrics.stop()
    without.stop()


def test_rest_metrics_are_routed_to_the_server_only_when_switched_on(
    envoys: tuple[EnvoyProcess, EnvoyProcess],
) -> None:
    with_metrics, without = envoys
    served = httpx.get(f"{with_metrics.base_url}/metrics", timeout=10.0)
    assert served.status_code == 200, served.text
    names = {family.name for family in text_string_to_metric_families(served.text)}
    assert {"parley_runs_finished", "grpc_server_handled", "parley_event_loop_lag_seconds"} <= names
    assert httpx.post(f"{with_metrics.base_url}/metrics", timeout=10.0).status_code == 404
    assert httpx.get(f"{without.base_url}/metrics", timeout=10.0).status_code == 404


def test_envoy_serves_its_own_metrics_on_the_admin_interface(
    envoys: tuple[EnvoyProcess, EnvoyProcess],
) -> None:
    _, without = envoys
    stats = httpx.get(f"{without.admin_url}/stats/prometheus", timeout=10.0)
    assert stats.status_code == 200
    names = {family.name for family in text_string_to_metric_families(stats.text)}
    assert any(name.startswith("envoy_cluster_upstream_rq") for name in names)
    assert render_module().EnvoySettings().admin_address == "127.0.0.1"  # the admin stays on loopback
