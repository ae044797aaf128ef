"""Envoy's own metrics for Prometheus: the ``stats`` listener of envoy/render.py (compose profile).

A real Envoy with a stats listener on a free loopback port and no gRPC server behind it (its
metrics do not need one): ``GET /stats/prometheus`` there is the admin interface's Prometheus
text, and nothing else of the admin interface is reachable through it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.envoy import EnvoyProcess, render_module
from tests.support.net import free_port

render = render_module()


def _listeners(settings: object) -> list[str]:
    document = yaml.safe_load(render.render(settings))
    return [listener["name"] for listener in document["static_resources"]["listeners"]]


def test_only_the_compose_profile_has_a_stats_listener() -> None:
    assert _listeners(render.PROFILES["local"]) == ["rest"]
    assert _listeners(render.PROFILES["compose"]) == ["rest", "stats"]
    assert render.PROFILES["compose"].stats_listen == ("0.0.0.0", 9902)
    assert render.PROFILES["compose"].admin_address == "127.0.0.1"


def test_stats_listener_serves_prometheus_text_and_nothing_else(tmp_path: Path) -> None:
    port = free_port()
    envoy = EnvoyProcess(f"127.0.0.1:{free_port()}", tmp_path, stats_listen=("127.0.0.1", port))
    envoy.start(wait_healthy=False)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            reply = client.get("/stats/prometheus")
            assert reply.status_code == 200
            names = {family.name for family in text_string_to_metric_families(reply.text)}
            assert "envoy_cluster_membership_healthy" in names
            assert "envoy_http_downstream_rq" in names  # counters lose _total in the parser
            for path in ("/stats", "/clusters", "/config_dump", "/quitquitquit", "/"):
                assert client.get(path).status_code == 404, path
            assert client.post("/stats/prometheus").status_code == 404
        # The admin interface itself still answers on its own loopback port.
        assert httpx.get(f"{envoy.admin_url}/ready", timeout=5).status_code == 200
    finally:
        envoy.stop()


def test_the_dashboards_envoy_queries_name_metrics_envoy_exports(tmp_path: Path) -> None:
    """Every ``envoy_*`` metric deploy/grafana/dashboards/parley.json queries is one Envoy serves."""
    dashboard = json.loads((Path(__file__).parents[2] / "deploy/grafana/dashboards/parley.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        for name in re.findall(r"\b(envoy_[a-z_]+)\{", target["expr"])
    }
    assert queried
    port = free_port()
    envoy = EnvoyProcess(f"127.0.0.1:{free_port()}", tmp_path, stats_listen=("127.0.0.1", port))
    envoy.start(wait_healthy=False)
    try:
        httpx.get(f"{envoy.base_url}/healthz", timeout=5)  # one downstream request, so rq_xx exists
        text = httpx.get(f"http://127.0.0.1:{port}/stats/prometheus", timeout=5).text
    finally:
        envoy.stop()
    exported = {m.group(1) for m in re.finditer(r"^([a-z_]+)[{ ]", text, re.MULTILINE)}
    assert queried <= exported, queried - exported
