"""OpenTelemetry traces of a real server, exported over OTLP/HTTP to a real receiver in the test
(``tests/support/otlp_receiver.py``): the RPC span is the child of the caller's ``traceparent``,
the run's spans are children of the RPC that started it, the model call carries the GenAI
attributes, and no span holds what was said.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from google.protobuf import json_format
from parley_proto.v1 import agent_service_pb2 as apb
from parley_proto.v1 import chat_service_pb2 as pb

from tests.audio.audio_samples import espeak_wav
from tests.rest.helpers import bearer, sse_events
from tests.support.client import UserClient
from tests.support.envoy import EnvoyProcess
from tests.support.http_tool_server import HttpToolServer
from tests.support.openai_standin import ScriptedCall, StandIn, Step
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.support.server import ServerProcess

MODEL = "standin/hello"
SECRET_TEXT = "my-very-private-question-7f3a"


def _traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def _trace(receiver: OtlpReceiver, trace_id: str, *names: str) -> list[ReceivedSpan]:
    """The spans of trace ``trace_id`` once every name in ``names`` has arrived."""

    def done(spans: list[ReceivedSpan]) -> bool:
        have = {s.name for s in spans if s.trace_id == trace_id}
        return all(n in have for n in names)

    return [s for s in receiver.wait_for(done) if s.trace_id == trace_id]


def _one(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def _no_text_in(spans: list[ReceivedSpan], *texts: str) -> None:
    for span in spans:
        for key, val in span.attributes.items():
            shown = json.dumps(val) if not isinstance(val, str) else val
            for text in texts:
                assert text not in shown, (span.name, key)


def test_a_send_is_one_server_span_the_run_its_child_and_the_model_call_a_genai_span(
    telemetry_server: ServerProcess, user: UserClient, receiver: OtlpReceiver
) -> None:
    session = user.create_session(user.create_agent(model=MODEL).name).name
    traceparent, trace_id, caller_span = _traceparent()
    events = list(
        user.stubs.chat.SendMessage(
            pb.SendMessageRequest(session=session, text=SECRET_TEXT), metadata=[("traceparent", traceparent)]
        )
    )
    reply = events[-1].message_completed.message
    rpc_name = "/parley.v1.ChatService/SendMessage"
    spans = _trace(receiver, trace_id, rpc_name, "invoke_agent", "chat hello")

    rpc = _one(spans, rpc_name)  # a streaming RPC is one span, however many events it sent
    assert rpc.kind == "SPAN_KIND_SERVER" and rpc.parent_span_id == caller_span
    assert rpc.resource["service.name"] == "parley-under-test"  # OTEL_SERVICE_NAME, read by the SDK
    run = _one(spans, "invoke_agent")
    assert run.parent_span_id == rpc.span_id
    assert run.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert run.attributes["gen_ai.conversation.id"] == session.rpartition("/")[2]
    assert run.attributes["parley.reply.status"] == "complete"
    chat = _one(spans, "chat hello")
    assert chat.parent_span_id == run.span_id and chat.kind == "SPAN_KIND_CLIENT"
    assert chat.attributes["gen_ai.operation.name"] == "chat"
    assert chat.attributes["gen_ai.provider.name"] == "standin"
    assert chat.attributes["gen_ai.request.model"] == "hello"
    assert chat.attributes["gen_ai.response.finish_reasons"] == ["end_turn"]
    assert chat.attributes["gen_ai.usage.input_tokens"] == reply.usage.input_tokens == 20
    assert chat.attributes["gen_ai.usage.output_tokens"] == reply.usage.output_tokens == 3
    # SQL statements are spans of the same trace (SQLAlchemy instrumentation), under the RPC or the run.
    statements = [s for s in spans if s.scope.startswith("opentelemetry.instrumentation.sqlalchemy")]
    assert statements and {s.parent_span_id for s in statements} <= {rpc.span_id, run.span_id}
    assert all(s.kind == "SPAN_KIND_CLIENT" for s in statements)
    _no_text_in(spans, SECRET_TEXT, "Hello there", user.password)


def test_a_failed_unary_rpc_records_its_code(
    telemetry_server: ServerProcess, user: UserClient, receiver: OtlpReceiver
) -> None:
    traceparent, trace_id, caller_span = _traceparent()
    with pytest.raises(Exception, match="NOT_FOUND"):
        user.stubs.agents.GetAgent(
            apb.GetAgentRequest(name="agents/0190aaaa-0000-7000-8000-000000000000"),
            metadata=[("traceparent", traceparent)],
        )
    rpc = _one(
        _trace(receiver, trace_id, "/parley.v1.AgentService/GetAgent"), "/parley.v1.AgentService/GetAgent"
    )
    assert rpc.parent_span_id == caller_span
    assert rpc.attributes["rpc.grpc.status_code"] == 5  # NOT_FOUND
    # The RPC semantic conventions: a server span is an error only for the server's own failures
    # (UNKNOWN, INTERNAL, UNAVAILABLE ...), not for a caller's NOT_FOUND.
    assert rpc.status_code == "STATUS_CODE_UNSET"


@pytest.fixture
def scripted() -> Iterator[None]:
    StandIn.steps.clear()
    yield
    StandIn.steps.clear()


def test_a_tool_turn_has_a_chat_span_per_step_and_an_execute_tool_span(
    telemetry_server: ServerProcess,
    user: UserClient,
    receiver: OtlpReceiver,
    peers: tuple[str, HttpToolServer],
    scripted: None,
) -> None:
    _, http_tools = peers
    agent = json_format.ParseDict(
        {
            "displayName": "Converter",
            "model": "standin/tools-trace",
            "tools": [
                {
                    "name": "convert",
                    "description": "Convert a temperature.",
                    "parameters": {"type": "object", "properties": {"celsius": {"type": "number"}}},
                    "http": {"url": f"{http_tools.url}/answer"},
                }
            ],
        },
        apb.Agent(),
    )
    agent = user.stubs.agents.CreateAgent(apb.CreateAgentRequest(agent=agent)).agent
    session = user.create_session(agent.name).name
    StandIn.steps.extend(
        [
            Step(calls=[ScriptedCall("call_conv", "convert", ['{"celsius": 21}'])]),
            Step(text=["It is 70 °F."]),
        ]
    )
    traceparent, trace_id, _ = _traceparent()
    events = list(
        user.stubs.chat.SendMessage(
            pb.SendMessageRequest(session=session, text="How warm?"), metadata=[("traceparent", traceparent)]
        )
    )
    assert events[-1].message_completed.message.text == "It is 70 °F."
    spans = _trace(receiver, trace_id, "execute_tool convert", "invoke_agent")
    spans = receiver.wait_for(
        lambda got: sum(1 for s in got if s.trace_id == trace_id and s.name == "chat tools-trace") == 2
    )
    spans = [s for s in spans if s.trace_id == trace_id]
    run = _one(spans, "invoke_agent")
    steps = [s for s in spans if s.name == "chat tools-trace"]
    assert {s.parent_span_id for s in steps} == {run.span_id}
    assert sorted(s.attributes["gen_ai.response.finish_reasons"][0] for s in steps) == [
        "end_turn",
        "tool_use",
    ]
    tool = _one(spans, "execute_tool convert")
    assert tool.parent_span_id == run.span_id and tool.status_code != "STATUS_CODE_ERROR"
    assert tool.attributes["gen_ai.tool.name"] == "convert"
    assert tool.attributes["gen_ai.tool.call.id"] == "call_conv"
    assert tool.attributes["gen_ai.operation.name"] == "execute_tool"
    _no_text_in(spans, "celsius", "It is 70", "How warm")


def test_voice_has_speech_to_text_under_the_rpc_and_text_to_speech_under_the_run(
    telemetry_server: ServerProcess, user: UserClient, receiver: OtlpReceiver
) -> None:
    session = user.create_session(user.create_agent(model=MODEL).name).name
    traceparent, trace_id, _ = _traceparent()
    list(
        user.stubs.chat.SendVoiceMessage(
            pb.SendVoiceMessageRequest(session=session, audio=espeak_wav("What is the capital of France?")),
            metadata=[("traceparent", traceparent)],
        )
    )
    rpc_name = "/parley.v1.ChatService/SendVoiceMessage"
    spans = _trace(receiver, trace_id, rpc_name, "speech_to_text", "text_to_speech", "invoke_agent")
    rpc, run = _one(spans, rpc_name), _one(spans, "invoke_agent")
    stt = _one(spans, "speech_to_text")
    assert stt.parent_span_id == rpc.span_id and stt.attributes["parley.speech.provider"] == "local"
    assert stt.attributes["parley.audio.duration_s"] > 1
    assert run.parent_span_id == rpc.span_id
    tts = [s for s in spans if s.name == "text_to_speech"]
    assert tts and {s.parent_span_id for s in tts} == {run.span_id}
    _no_text_in(spans, "capital", "France", "Hello there")


def _rest_send(envoy: EnvoyProcess, user: UserClient, session: str, headers: dict[str, str]) -> list[Any]:
    with (
        httpx.Client(base_url=envoy.base_url, headers=bearer(user) | headers, timeout=60.0) as client,
        client.stream("POST", f"/v1/{session}:sendMessage", json={"text": "Hi over REST"}) as response,
    ):
        assert response.status_code == 200
        return list(sse_events(response))


def test_a_traceparent_sent_through_envoy_is_the_parent_of_the_server_span(
    telemetry_server: ServerProcess,
    user: UserClient,
    receiver: OtlpReceiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    envoy = EnvoyProcess(telemetry_server.target, tmp_path_factory.mktemp("envoy-traces")).start()
    try:
        session = user.create_session(user.create_agent(model=MODEL).name).name
        traceparent, trace_id, caller_span = _traceparent()
        events = _rest_send(envoy, user, session, {"traceparent": traceparent})
        assert "messageCompleted" in events[-1]
    finally:
        envoy.stop()
    rpc_name = "/parley.v1.ChatService/SendMessage"
    spans = _trace(receiver, trace_id, rpc_name, "invoke_agent")
    rpc = _one(spans, rpc_name)
    assert rpc.parent_span_id == caller_span
    assert _one(spans, "invoke_agent").parent_span_id == rpc.span_id


def test_health_checks_are_not_traced(
    telemetry_server: ServerProcess, user: UserClient, receiver: OtlpReceiver
) -> None:
    """The harness checked health before the tests and Envoy checks it every second; none of it is a span."""
    user.stubs.agents.ListAgents(apb.ListAgentsRequest())
    spans = receiver.wait_for(lambda got: any(s.name == "/parley.v1.AgentService/ListAgents" for s in got))
    assert not [s for s in spans if "grpc.health" in s.name or "Reflection" in s.name]
