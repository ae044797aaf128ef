"""Route timeouts: a long stream is never cut, an idle stream and a slow unary call are.

The real server cannot be made to stall on purpose, so the idle and slow cases run against a
small stand-in gRPC upstream (the real ChatService/AgentService stubs, with handlers that stop
talking), behind an Envoy rendered from the same template with short timeouts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from parley_proto.v1 import (
    agent_service_pb2,
    agent_service_pb2_grpc,
    chat_service_pb2,
    chat_service_pb2_grpc,
)

from tests.rest.helpers import RestUser, assert_status, sse_events
from tests.support.envoy import EnvoyProcess
from tests.support.server import ServerProcess

IDLE_S = 1.5
UNARY_S = 1.5


class _Stalling(chat_service_pb2_grpc.ChatServiceServicer, agent_service_pb2_grpc.AgentServiceServicer):
    """Sends one event and then nothing (until cancelled); answers GetAgent too late."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()

    def SendMessage(
        self, request: Any, context: grpc.ServicerContext
    ) -> Iterator[chat_service_pb2.ChatEvent]:
        done = threading.Event()
        context.add_callback(done.set)
        yield chat_service_pb2.ChatEvent(
            sequence_number=1,
            message_accepted=chat_service_pb2.MessageAccepted(
                assistant_message=f"{request.session}/messages/m"
            ),
        )
        if done.wait(30) and not context.is_active():
            self.cancelled.set()

    def GetAgent(self, request: Any, context: grpc.ServicerContext) -> agent_service_pb2.GetAgentResponse:
        done = threading.Event()
        context.add_callback(done.set)
        if done.wait(UNARY_S * 4):
            self.cancelled.set()
        return agent_service_pb2.GetAgentResponse()


@pytest.fixture(scope="module")
def stalling(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[_Stalling, EnvoyProcess]]:
    servicer = _Stalling()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    chat_service_pb2_grpc.add_ChatServiceServicer_to_server(servicer, server)
    agent_service_pb2_grpc.add_AgentServiceServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        proxy = EnvoyProcess(
            f"127.0.0.1:{port}",
            tmp_path_factory.mktemp("envoy-stalling"),
            stream_idle_timeout=f"{IDLE_S}s",
            unary_timeout=f"{UNARY_S}s",
        ).start()
        try:
            yield servicer, proxy
        finally:
            proxy.stop()
    finally:
        server.stop(0)


def test_idle_stream_is_reset(stalling: tuple[_Stalling, EnvoyProcess]) -> None:
    servicer, proxy = stalling
    servicer.cancelled.clear()
    with httpx.Client(base_url=proxy.base_url, timeout=30) as client:
        started = time.monotonic()
        events = []
        with (
            pytest.raises(httpx.RemoteProtocolError),
            client.stream("POST", "/v1/sessions/s:sendMessage", json={"text": "hi"}) as response,
        ):
            assert response.status_code == 200
            events.extend(sse_events(response))
        elapsed = time.monotonic() - started
    assert [e["sequenceNumber"] for e in events] == ["1"]
    assert IDLE_S - 0.1 <= elapsed < IDLE_S + 5, elapsed
    assert servicer.cancelled.wait(5), "the upstream call was not cancelled"


def test_slow_unary_call_times_out(stalling: tuple[_Stalling, EnvoyProcess]) -> None:
    servicer, proxy = stalling
    servicer.cancelled.clear()
    with httpx.Client(base_url=proxy.base_url, timeout=30) as client:
        started = time.monotonic()
        response = client.get("/v1/agents/0190b3c4-0000-7000-8000-000000000000")
        elapsed = time.monotonic() - started
    body = assert_status(response, 504, 4, "UNAVAILABLE")  # Envoy's own reply, in the server's shape
    assert body["details"][1]["requestId"] == response.headers["x-request-id"]
    assert UNARY_S - 0.1 <= elapsed < UNARY_S + 5, elapsed
    assert servicer.cancelled.wait(5), "the upstream call was not cancelled"


def test_long_stream_is_not_cut(
    server: ServerProcess, rest_alice: RestUser, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A reply that streams for longer than the unary deadline and the idle timeout of this
    proxy still completes: streams have no overall deadline, and a talking stream is not idle."""
    proxy = EnvoyProcess(
        server.target, tmp_path_factory.mktemp("envoy-long"), stream_idle_timeout="1s", unary_timeout="1s"
    ).start()
    try:
        agent = rest_alice.create_agent(maxOutputTokens=300, instructions="You write long, detailed answers.")
        session = rest_alice.create_session(agent["name"])["name"]
        with httpx.Client(base_url=proxy.base_url, headers=rest_alice.client.headers, timeout=120) as client:
            started = time.monotonic()
            with client.stream(
                "POST", f"/v1/{session}:sendMessage", json={"text": "Explain in detail how bread is made."}
            ) as response:
                assert response.status_code == 200
                events = list(sse_events(response))
            elapsed = time.monotonic() - started
        assert "messageCompleted" in events[-1], events[-1]
        reply = events[-1]["messageCompleted"]["message"]
        if elapsed <= 1.0:  # the model happened to answer briefly; nothing was proven
            assert reply["stopReason"] == "STOP_REASON_END_TURN"
            pytest.skip(f"the reply took only {elapsed:.2f} s")
        assert reply["status"] == "STATUS_COMPLETE"
    finally:
        proxy.stop()
