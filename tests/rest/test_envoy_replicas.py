"""Envoy in front of several replicas: envoy/render.py's upstreams, and what the rendered clusters do.

The render tests read the rendered config (no Envoy). The behaviour tests run the real Envoy in
front of small stand-in replicas (the real AgentService/ChatService stubs and grpc.health.v1,
each answering with an ``x-replica`` header naming itself), so a health status or a failure can
be set per replica; no Parley server is started.
"""

from __future__ import annotations

import io
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from parley_proto.v1 import (
    agent_service_pb2,
    agent_service_pb2_grpc,
    chat_service_pb2,
    chat_service_pb2_grpc,
)

from tests.support.envoy import EnvoyProcess, render_module

render = render_module()
CHAT = "parley.v1.ChatService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _config(settings: Any) -> dict[str, Any]:
    document = yaml.safe_load(render.render(settings))  # resolves the template's anchors
    assert isinstance(document, dict)
    return document


def _clusters(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in config["static_resources"]["clusters"]}


def _endpoints(cluster: dict[str, Any]) -> list[tuple[str, int]]:
    return [
        (
            e["endpoint"]["address"]["socket_address"]["address"],
            e["endpoint"]["address"]["socket_address"]["port_value"],
        )
        for group in cluster["load_assignment"]["endpoints"]
        for e in group["lb_endpoints"]
    ]


def _routes(config: dict[str, Any]) -> list[dict[str, Any]]:
    (listener,) = config["static_resources"]["listeners"]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    (host,) = manager["route_config"]["virtual_hosts"]
    routes: list[dict[str, Any]] = host["routes"]
    return routes


# --- render ------------------------------------------------------------------------------------


def test_one_upstream_is_one_endpoint_in_both_clusters() -> None:
    clusters = _clusters(_config(render.PROFILES["local"]))
    assert set(clusters) == {"parley_grpc", "parley_chat"}
    for cluster in clusters.values():
        assert _endpoints(cluster) == [("127.0.0.1", 50051)]
    assert _endpoints(_clusters(_config(render.PROFILES["compose"]))["parley_grpc"]) == [("parley", 50051)]


def test_several_upstreams_are_balanced_health_checked_endpoints() -> None:
    replicas = (("127.0.0.1", 50051), ("127.0.0.1", 50052), ("10.0.0.7", 50051))
    clusters = _clusters(_config(render.EnvoySettings(upstreams=replicas)))
    for name, service in [("parley_grpc", ""), ("parley_chat", CHAT)]:
        cluster = clusters[name]
        assert _endpoints(cluster) == list(replicas)
        assert cluster["lb_policy"] in ("LEAST_REQUEST", "ROUND_ROBIN")
        (check,) = cluster["health_checks"]
        assert check["grpc_health_check"] == {"service_name": service}
        assert (check["unhealthy_threshold"], check["healthy_threshold"]) == (2, 1)
        outliers = cluster["outlier_detection"]
        assert outliers["max_ejection_percent"] < 100  # never every replica
        assert outliers["enforcing_consecutive_gateway_failure"] == 100  # Envoy's default is 0
        assert cluster["common_lb_config"]["healthy_panic_threshold"]["value"] == 50.0


def test_chat_rpcs_go_to_the_chat_cluster_and_streams_have_no_deadline() -> None:
    """Every ChatService method is routed to parley_chat (health-checked on ChatService), every
    streaming one without an overall timeout; the other services go to parley_grpc."""
    routes = [r for r in _routes(_config(render.EnvoySettings())) if "route" in r]

    def route_of(path: str) -> dict[str, Any]:
        route: dict[str, Any] = next(r["route"] for r in routes if path.startswith(r["match"]["prefix"]))
        return route

    for method in chat_service_pb2.DESCRIPTOR.services_by_name["ChatService"].methods:
        route = route_of(f"/{CHAT}/{method.name}")
        assert route["cluster"] == "parley_chat", method.name
        assert (route["timeout"] == "0s") == method.server_streaming, method.name
        assert "connect-failure" in route["retry_policy"]["retry_on"]
    assert route_of("/parley.v1.AgentService/GetAgent")["cluster"] == "parley_grpc"


def test_cli_takes_repeated_upstreams() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        assert render.main(["--upstream", "127.0.0.1:50061", "--upstream", "[::1]:50062", "-o", "-"]) == 0
    clusters = _clusters(yaml.safe_load(out.getvalue()))
    assert _endpoints(clusters["parley_chat"]) == [("127.0.0.1", 50061), ("::1", 50062)]
    with pytest.raises(SystemExit):
        render.main(["--upstream", "127.0.0.1:1", "--upstream", "127.0.0.1:1", "-o", "-"])


# --- behaviour, with stand-in replicas ---------------------------------------------------------


class _Replica(agent_service_pb2_grpc.AgentServiceServicer, chat_service_pb2_grpc.ChatServiceServicer):
    """A gRPC server with GetAgent and GetMessage that answer with an ``x-replica: NAME`` header,
    or UNAVAILABLE (trailers-only, as the real server's errors) while ``failing``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.failing = False
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        agent_service_pb2_grpc.add_AgentServiceServicer_to_server(self, self.server)
        chat_service_pb2_grpc.add_ChatServiceServicer_to_server(self, self.server)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.target = f"127.0.0.1:{port}"
        self.server.start()
        for service in ("", CHAT):
            self.health.set(service, SERVING)

    def _answer(self, context: grpc.ServicerContext, response: Any) -> Any:
        if self.failing:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.name} is failing")
        context.send_initial_metadata((("x-replica", self.name),))
        return response

    def GetAgent(self, request: Any, context: grpc.ServicerContext) -> agent_service_pb2.GetAgentResponse:
        return self._answer(context, agent_service_pb2.GetAgentResponse())

    def GetMessage(self, request: Any, context: grpc.ServicerContext) -> chat_service_pb2.GetMessageResponse:
        return self._answer(context, chat_service_pb2.GetMessageResponse())


AGENT = "/v1/agents/0190b3c4-0000-7000-8000-000000000000"
MESSAGE = "/v1/sessions/s/messages/m"


def _wait(what: str, condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}"
        time.sleep(0.1)


def _served_by(client: httpx.Client, path: str, calls: int = 24, *, strict: bool = True) -> Counter[str]:
    """Which replicas answered ``calls`` GETs of ``path``: each must succeed, or with ``strict``
    false counts as ``"HTTP <status>"``."""
    seen: Counter[str] = Counter()
    for _ in range(calls):
        response = client.get(path)
        if strict:
            assert response.status_code == 200, response.text
        seen[response.headers.get("x-replica", f"HTTP {response.status_code}")] += 1
    return seen


def _settles_on(client: httpx.Client, path: str, replicas: set[str]) -> None:
    """Calls of ``path`` come to be answered by ``replicas`` only (every call succeeding). A
    host's new health shows in the admin interface (the main thread) up to about a second before
    the workers that route calls stop or start using it. Balancing picks either of two
    replicas about half the time: 16 calls to one are not chance."""
    _wait(
        f"{path} served by {sorted(replicas)}",
        lambda: set(_served_by(client, path, calls=16, strict=False)) == replicas,
    )
    assert set(_served_by(client, path)) == replicas


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[Callable[[int], tuple[list[_Replica], EnvoyProcess]]]:
    """Start N stand-in replicas and an Envoy in front of them (all healthy before it returns)."""
    started: list[tuple[list[_Replica], EnvoyProcess]] = []

    def start(n: int) -> tuple[list[_Replica], EnvoyProcess]:
        backends = [_Replica(chr(ord("a") + i)) for i in range(n)]
        proxy = EnvoyProcess([b.target for b in backends], tmp_path)
        started.append((backends, proxy))
        proxy.start()
        for cluster in ("parley_grpc", "parley_chat"):
            _wait(f"{cluster} healthy", lambda c=cluster: all(not f for f in proxy.hosts(c).values()))
        return backends, proxy

    yield start
    for backends, proxy in started:
        proxy.stop()
        for backend in backends:
            backend.server.stop(0)


def test_calls_are_spread_over_the_replicas(replicas: Callable[..., Any]) -> None:
    _, proxy = replicas(2)
    with httpx.Client(base_url=proxy.base_url, timeout=10) as client:
        assert set(_served_by(client, AGENT)) == {"a", "b"}
        assert set(_served_by(client, MESSAGE)) == {"a", "b"}
        assert client.get("/healthz").status_code == 200


def test_a_replica_whose_chat_is_not_serving_gets_no_chat_calls(replicas: Callable[..., Any]) -> None:
    (a, _), proxy = replicas(2)
    a.health.set(CHAT, NOT_SERVING)
    with httpx.Client(base_url=proxy.base_url, timeout=10) as client:
        _settles_on(client, MESSAGE, {"b"})
        assert proxy.hosts("parley_chat")[a.target] == {"failed_active_health_check"}
        assert set(_served_by(client, AGENT)) == {"a", "b"}  # its other services still serve
        assert not proxy.hosts("parley_grpc")[a.target]
        a.health.set(CHAT, SERVING)
        _settles_on(client, MESSAGE, {"a", "b"})


def test_a_draining_replica_leaves_and_healthz_needs_one_replica(replicas: Callable[..., Any]) -> None:
    (a, b), proxy = replicas(2)
    a.health.enter_graceful_shutdown()  # every service NOT_SERVING, as the server on SIGTERM
    with httpx.Client(base_url=proxy.base_url, timeout=10) as client:
        _settles_on(client, AGENT, {"b"})
        _settles_on(client, MESSAGE, {"b"})
        assert client.get("/healthz").status_code == 200  # b serves
        b.health.enter_graceful_shutdown()
        _wait("b out of parley_grpc", lambda: "failed_active_health_check" in proxy.hosts()[b.target])
        assert client.get("/healthz").status_code == 503


def test_a_stopped_replica_costs_no_failed_call(replicas: Callable[..., Any]) -> None:
    """Calls sent to a replica that is gone (still in rotation: the health checks have not
    noticed yet) are retried on the other one."""
    (a, _), proxy = replicas(2)
    with httpx.Client(base_url=proxy.base_url, timeout=10) as client:
        assert set(_served_by(client, AGENT)) == {"a", "b"}  # connections to both are open
        a.server.stop(0)
        assert set(_served_by(client, AGENT)) == {"b"}
        assert set(_served_by(client, MESSAGE)) == {"b"}


def test_a_failing_replica_is_ejected(replicas: Callable[..., Any]) -> None:
    (a, _), proxy = replicas(2)
    a.failing = True
    with httpx.Client(base_url=proxy.base_url, timeout=10) as client:
        # a's health checks still pass; its calls' UNAVAILABLE (503) eject it after 3 in a row.
        def ejected() -> bool:
            client.get(AGENT)  # a's share of these fails
            return "failed_outlier_check" in proxy.hosts()[a.target]

        _wait("a ejected", ejected)
        _settles_on(client, AGENT, {"b"})
        assert proxy.hosts()[a.target] == {"failed_outlier_check"}  # its health checks pass


def test_a_lone_replica_is_never_taken_out_of_rotation(replicas: Callable[..., Any]) -> None:
    """One replica failing its health checks and its calls still gets every call (panic mode,
    and outlier detection never ejects the last one): a single-server deployment, or Envoy
    started before its server, behaves as without health checking."""
    (a,), proxy = replicas(1)
    a.failing = True
    with httpx.Client(base_url=proxy.base_url, timeout=10) as client:
        for _ in range(10):
            assert client.get(AGENT).status_code == 503
        assert "failed_outlier_check" not in proxy.hosts()[a.target]
        a.failing = False
        a.health.set("", NOT_SERVING)
        a.health.set(CHAT, NOT_SERVING)
        _wait("a failing its checks", lambda: "failed_active_health_check" in proxy.hosts()[a.target])
        assert set(_served_by(client, AGENT, calls=4)) == {"a"}
        assert set(_served_by(client, MESSAGE, calls=4)) == {"a"}
        assert client.get("/healthz").status_code == 503
