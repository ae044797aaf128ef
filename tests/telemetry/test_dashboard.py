"""The Grafana dashboard (deploy/grafana/dashboards/parley.json) queries only metrics a running
server declares on ``/metrics``, and the Prometheus config scrapes the port the compose file sets.

A dashboard that names a metric nobody exports shows an empty panel and no error, so the names are
checked against a real server's page (every family is declared there from start-up, with its
``# TYPE`` line, even before its first sample).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.server import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "parley.json"
#: Series of a histogram or counter family, as PromQL names them.
_SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def _queried(job: str) -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    names = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            names.update(re.findall(r"\b([a-z_:]+)\{job=\"" + job, target["expr"]))
    return names


def _family(series: str) -> str:
    for suffix in _SUFFIXES:
        if series.endswith(suffix):
            return series.removesuffix(suffix)
    return series


def test_every_parley_metric_the_dashboard_queries_is_declared(telemetry_server: ServerProcess) -> None:
    queried = _queried("parley")
    assert len(queried) >= 10
    page = httpx.get(telemetry_server.metrics_url, timeout=10).text
    declared = {family.name for family in text_string_to_metric_families(page)}
    missing = {name for name in queried if _family(name) not in declared}
    assert not missing, f"the dashboard queries metrics the server does not declare: {sorted(missing)}"


def test_dashboard_shape() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "parley"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "prometheus"  # deploy/grafana/provisioning
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]


def test_prometheus_scrapes_the_metrics_port_of_every_replica() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    listen = compose["services"]["parley"]["environment"]["PARLEY_METRICS_LISTEN"]
    (sd,) = jobs["parley"]["dns_sd_configs"]
    assert sd["names"] == ["parley"] and sd["type"] == "A"
    assert str(sd["port"]) == listen.rsplit(":", 1)[1]
    assert jobs["envoy"]["metrics_path"] == "/stats/prometheus"
    assert jobs["envoy"]["static_configs"][0]["targets"] == ["envoy:9902"]  # render.py's compose profile
    for mount in compose["services"]["prometheus"]["volumes"] + compose["services"]["grafana"]["volumes"]:
        source = mount.split(":", 1)[0]
        if source.startswith("./"):
            assert (ROOT / source).exists(), source
