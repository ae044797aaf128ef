"""The Bedrock Agents provider (InvokeAgent through boto3).

No Bedrock endpoint can run here, so this is the one kind of mock allowed: botocore's
``Stubber`` answers ``invoke_agent`` (after botocore has checked the call's parameters against
the real service model), and each answer's ``completion`` is a real botocore ``EventStream``
over the AWS event-stream encoding of the DOCUMENTED InvokeAgent events (``chunk`` with
``bytes`` and ``attribution.citations``, ``returnControl`` with function and API invocation
inputs, and the exception events), decoded and parsed by botocore itself (see
``tests/support/bedrock_agent_stream.py``). An endpoint that cannot be reached is a real
failure, no mock.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from botocore.config import Config
from parley.domain.errors import (
    FailedPrecondition,
    InvalidArgument,
    ParleyError,
    ResourceExhausted,
    Unavailable,
)
from parley.domain.models import StopReason
from parley.providers.llm.base import (
    ChatTurn,
    Citation,
    CitationSource,
    Conversation,
    GenerationRequest,
    ProviderEvent,
    StopEvent,
    TextDeltaEvent,
    ToolCallEvent,
    ToolDefinition,
    UsageEvent,
)
from parley.providers.llm.bedrock_agent import BedrockAgentProvider
from parley.providers.llm.bedrock_agent_wire import bedrock_session_id
from parley.providers.llm.hosted import estimate_text_tokens, estimate_tokens

from tests.support.bedrock_agent_stream import AgentStub, chunk, error_event, return_control
from tests.support.net import free_port

MODEL = "AGENT12345/TSTALIASID"
MAIN = Conversation("sess-1", "main", None, "user-7", continues=False)
FIRST = GenerationRequest(
    MODEL, [ChatTurn("system", "ignored"), ChatTurn("user", "Hi")], 256, conversation=MAIN
)
BASE = {
    "agentId": "AGENT12345",
    "agentAliasId": "TSTALIASID",
    "enableTrace": False,
    "streamingConfigurations": {"streamFinalResponse": True},
}
CITED = {
    "generatedResponsePart": {
        "textResponsePart": {"text": "Paris is the capital", "span": {"start": 0, "end": 19}}
    },
    "retrievedReferences": [
        {
            "content": {"text": "Paris is the capital of France.", "type": "TEXT"},
            "location": {"type": "S3", "s3Location": {"uri": "s3://kb/france.txt"}},
            "metadata": {"x-amz-bedrock-kb-source-uri": "s3://kb/france.txt", "page": 3},
        },
        {
            "content": {"text": "France: capital Paris."},
            "location": {"type": "WEB", "webLocation": {"url": "https://example.org/fr"}},
        },
    ],
}


def expected(request: GenerationRequest, **fields: Any) -> dict[str, Any]:
    assert request.conversation is not None
    return {**BASE, "sessionId": bedrock_session_id(request.conversation, MODEL), **fields}


async def run(provider: BedrockAgentProvider, request: GenerationRequest) -> list[ProviderEvent]:
    return [event async for event in provider.stream(request)]


@pytest.fixture
def stub() -> AgentStub:
    return AgentStub()


@pytest.fixture
async def provider(stub: AgentStub) -> AsyncIterator[BedrockAgentProvider]:
    made = BedrockAgentProvider("us-east-1", client=stub.client)
    yield made
    await made.close()


async def test_chunks_stream_with_citations_and_estimated_usage(
    stub: AgentStub, provider: BedrockAgentProvider
) -> None:
    stub.answer(
        [chunk("Paris is the capital", [CITED]), chunk(" of France.")],
        expected(FIRST, inputText="Hi"),
    )
    events = await run(provider, FIRST)
    assert events == [
        TextDeltaEvent("Paris is the capital", estimate_text_tokens("Paris is the capital")),
        TextDeltaEvent(" of France.", estimate_text_tokens(" of France.")),
        UsageEvent(estimate_tokens(FIRST.turns), estimate_text_tokens("Paris is the capital") + 3),
        StopEvent(
            StopReason.END_TURN,
            (
                Citation(
                    "Paris is the capital",
                    0,
                    19,
                    (
                        CitationSource(
                            "Paris is the capital of France.",
                            "s3://kb/france.txt",
                            "S3",
                            {"x-amz-bedrock-kb-source-uri": "s3://kb/france.txt", "page": "3"},
                        ),
                        CitationSource("France: capital Paris.", "https://example.org/fr", "WEB"),
                    ),
                ),
            ),
        ),
    ]
    stub.stubber.assert_no_pending_responses()


def _path(*texts: str) -> list[ChatTurn]:
    roles = ("user", "assistant")
    return [ChatTurn(roles[i % 2], text) for i, text in enumerate(texts)]


async def test_one_bedrock_session_along_a_branch_and_a_new_seeded_one_after_a_fork(
    stub: AgentStub, provider: BedrockAgentProvider
) -> None:
    # Main: the first turn, then one that continues it (only the newest message is sent).
    second = GenerationRequest(
        MODEL,
        _path("Hi", "Hello!", "Capital of France?"),
        256,
        conversation=Conversation("sess-1", "main", None, "user-7", True),
    )
    stub.answer([chunk("Hello!")], expected(FIRST, inputText="Hi"))
    stub.answer([chunk("Paris.")], expected(second, inputText="Capital of France?"))
    # A fork at "Hello!": a new branch, so a new Bedrock session seeded with the path before.
    forked = GenerationRequest(
        MODEL,
        [
            ChatTurn("system", "ignored"),
            *_path("Hi", "Hello!", "Capital of Spain?"),
        ],
        256,
        conversation=Conversation("sess-1", "fork-1", "msg-hello", "user-7", False),
    )
    history = [
        {"role": "user", "content": [{"text": "Hi"}]},
        {"role": "assistant", "content": [{"text": "Hello!"}]},
    ]
    stub.answer(
        [chunk("Madrid.")],
        expected(
            forked, inputText="Capital of Spain?", sessionState={"conversationHistory": {"messages": history}}
        ),
    )
    for request in (FIRST, second, forked):
        await run(provider, request)
    stub.stubber.assert_no_pending_responses()
    sessions = [call["sessionId"] for call in stub.calls]
    assert sessions[0] == sessions[1] != sessions[2]
    assert all(s.startswith("parley-") and len(s) <= 100 for s in sessions)
    # Regenerating on yet another branch (fork point: the user message) is another session again.
    regen = Conversation("sess-1", "regen-1", "msg-question", "user-7", False)
    assert bedrock_session_id(regen, MODEL) not in sessions


async def test_failed_user_turns_in_a_row_are_one_input(
    stub: AgentStub, provider: BedrockAgentProvider
) -> None:
    request = GenerationRequest(
        MODEL, [*_path("Hi", "Hello!", "First try"), ChatTurn("user", "Second try")], 256
    )
    stub.answer([chunk("ok")])
    await run(provider, request)
    call = stub.calls[0]
    assert call["inputText"] == "First try\n\nSecond try"
    # No conversation (not a reply): a one-off Bedrock session, seeded with the path.
    assert call["sessionId"].startswith("parley-once-")
    assert call["sessionState"]["conversationHistory"]["messages"][-1] == {
        "role": "assistant",
        "content": [{"text": "Hello!"}],
    }


async def test_memory_id_is_the_parley_user_with_the_setting(stub: AgentStub) -> None:
    provider = BedrockAgentProvider("us-east-1", client=stub.client, memory=True)
    stub.answer([chunk("Hi.")], expected(FIRST, inputText="Hi", memoryId="user-7"))
    await run(provider, FIRST)
    stub.stubber.assert_no_pending_responses()
    await provider.close()


WEATHER = ToolDefinition("get_weather", "", {"type": "object", "properties": {"city": {"type": "string"}}})
BOOKING = ToolDefinition("Bookings", "", {"type": "object"})
INPUTS = [
    {
        "functionInvocationInput": {
            "actionGroup": "WeatherGroup",
            "function": "get_weather",
            "actionInvocationType": "RESULT",
            "agentId": "AGENT12345",
            "parameters": [
                {"name": "city", "type": "string", "value": "Paris"},
                {"name": "days", "type": "integer", "value": "2"},
            ],
        }
    },
    {
        "apiInvocationInput": {
            "actionGroup": "Bookings",
            "apiPath": "/bookings/{id}",
            "httpMethod": "GET",
            "parameters": [{"name": "id", "type": "string", "value": "b-1"}],
            "requestBody": {
                "content": {
                    "application/json": {"properties": [{"name": "full", "type": "boolean", "value": "true"}]}
                }
            },
        }
    },
]


async def test_return_control_becomes_tool_calls_answered_on_the_next_call(
    stub: AgentStub, provider: BedrockAgentProvider
) -> None:
    ask = GenerationRequest(
        MODEL, _path("Weather in Paris, and my booking?"), 256, tools=[WEATHER, BOOKING], conversation=MAIN
    )
    stub.answer(
        [chunk("Let me check."), return_control("inv-42", INPUTS)],
        expected(ask, inputText=ask.turns[-1].content),
    )
    events = await run(provider, ask)
    calls = [e.call for e in events if isinstance(e, ToolCallEvent)]
    assert [c.name for c in calls] == ["get_weather", "Bookings"]
    assert json.loads(calls[0].arguments) == {"city": "Paris", "days": 2}
    assert json.loads(calls[1].arguments) == {
        "apiPath": "/bookings/{id}",
        "httpMethod": "GET",
        "parameters": {"id": "b-1"},
        "requestBody": {"application/json": {"full": True}},
    }
    assert len({c.id for c in calls}) == 2 and all(c.id.startswith("bra_") for c in calls)
    assert events[0] == TextDeltaEvent("Let me check.", estimate_text_tokens("Let me check."))
    assert events[-1] == StopEvent(StopReason.TOOL_USE)
    # The tool loop calls again with the step and the outputs: they go back as the invocation's results.
    answered = GenerationRequest(
        MODEL,
        [
            *ask.turns,
            ChatTurn("assistant", "Let me check.", tool_calls=calls),
            ChatTurn("tool", '{"sky": "clear"}', tool_call_id=calls[0].id),
            ChatTurn("tool", '{"booking": "b-1", "nights": 2}', tool_call_id=calls[1].id),
        ],
        256,
        tools=[WEATHER, BOOKING],
        conversation=MAIN,
    )
    results = [
        {
            "functionResult": {
                "actionGroup": "WeatherGroup",
                "function": "get_weather",
                "responseBody": {"TEXT": {"body": '{"sky": "clear"}'}},
            }
        },
        {
            "apiResult": {
                "actionGroup": "Bookings",
                "apiPath": "/bookings/{id}",
                "httpMethod": "GET",
                "httpStatusCode": 200,
                "responseBody": {"application/json": {"body": '{"booking": "b-1", "nights": 2}'}},
            }
        },
    ]
    stub.answer(
        [chunk("Clear skies; booking b-1 is for 2 nights.")],
        expected(
            answered, sessionState={"invocationId": "inv-42", "returnControlInvocationResults": results}
        ),
    )
    final = await run(provider, answered)
    assert final[-1] == StopEvent(StopReason.END_TURN)
    stub.stubber.assert_no_pending_responses()
    assert stub.calls[0]["sessionId"] == stub.calls[1]["sessionId"]


async def test_return_control_for_a_tool_the_agent_lacks_is_a_failed_precondition(
    stub: AgentStub, provider: BedrockAgentProvider
) -> None:
    stub.answer([return_control("inv-1", INPUTS[:1])])
    with pytest.raises(FailedPrecondition) as caught:
        await run(provider, FIRST)  # an agent without tools
    assert "AGENT12345" in caught.value.message and "get_weather" in caught.value.message
    assert caught.value.metadata == {
        "provider": "bedrock-agent",
        "agent": "AGENT12345",
        "tool": "get_weather",
    }


async def test_a_result_for_a_call_the_agent_did_not_make_is_refused(provider: BedrockAgentProvider) -> None:
    request = GenerationRequest(
        MODEL,
        [
            ChatTurn("user", "x"),
            ChatTurn("assistant", "", tool_calls=()),
            ChatTurn("tool", "out", tool_call_id="call_1"),
        ],
        256,
    )
    with pytest.raises(FailedPrecondition):
        await run(provider, request)


@pytest.mark.parametrize(
    ("code", "status", "error", "reason"),
    [
        ("ThrottlingException", 429, ResourceExhausted, "PROVIDER_RATE_LIMITED"),
        ("ServiceQuotaExceededException", 400, ResourceExhausted, "PROVIDER_RATE_LIMITED"),
        ("AccessDeniedException", 403, FailedPrecondition, "FAILED_PRECONDITION"),
        ("ResourceNotFoundException", 404, FailedPrecondition, "FAILED_PRECONDITION"),
        ("ValidationException", 400, InvalidArgument, "PROVIDER_REJECTED_INPUT"),
        ("InternalServerException", 500, Unavailable, "PROVIDER_UNAVAILABLE"),
        ("BadGatewayException", 502, Unavailable, "PROVIDER_UNAVAILABLE"),
        ("DependencyFailedException", 424, Unavailable, "PROVIDER_UNAVAILABLE"),
    ],
)
async def test_errors_before_the_stream_are_mapped(
    stub: AgentStub,
    provider: BedrockAgentProvider,
    code: str,
    status: int,
    error: type[ParleyError],
    reason: str,
) -> None:
    stub.refuse(code, status, expected(FIRST, inputText="Hi"))
    with pytest.raises(error) as caught:
        await run(provider, FIRST)
    assert caught.value.reason == reason and caught.value.metadata["provider"] == "bedrock-agent"
    if error is FailedPrecondition:
        assert "bedrock-agent/AGENT12345/TSTALIASID" in caught.value.message
        assert caught.value.metadata["agent"] == MODEL


@pytest.mark.parametrize(
    ("code", "error", "reason"),
    [
        ("throttlingException", ResourceExhausted, "PROVIDER_RATE_LIMITED"),
        ("accessDeniedException", FailedPrecondition, "FAILED_PRECONDITION"),
        ("resourceNotFoundException", FailedPrecondition, "FAILED_PRECONDITION"),
        ("dependencyFailedException", Unavailable, "PROVIDER_UNAVAILABLE"),
        ("internalServerException", Unavailable, "PROVIDER_UNAVAILABLE"),
        ("validationException", InvalidArgument, "PROVIDER_REJECTED_INPUT"),
    ],
)
async def test_error_events_end_the_stream_after_the_text_so_far(
    stub: AgentStub, provider: BedrockAgentProvider, code: str, error: type[ParleyError], reason: str
) -> None:
    stub.answer([chunk("Par"), error_event(code, "no")])
    seen: list[ProviderEvent] = []
    with pytest.raises(error) as caught:
        async for event in provider.stream(FIRST):
            seen.append(event)
    assert seen == [TextDeltaEvent("Par", 1)]
    assert caught.value.reason == reason


async def test_a_malformed_agent_model_is_unknown(provider: BedrockAgentProvider) -> None:
    for model in ("AGENT12345", "AGENT12345/", "agent-1/alias", "AGENT12345/TSTALIASID/x"):
        with pytest.raises(InvalidArgument) as caught:
            await run(provider, GenerationRequest(model, [ChatTurn("user", "x")], 16))
        assert caught.value.reason == "UNKNOWN_MODEL"


async def test_closing_the_stream_closes_the_event_stream(
    stub: AgentStub, provider: BedrockAgentProvider
) -> None:
    body = stub.answer([chunk("Hel")], block=True)  # the agent "thinks" after the first chunk
    events = provider.stream(FIRST)
    assert await anext(events) == TextDeltaEvent("Hel", 1)
    await events.aclose()
    assert body.closed.is_set()


async def test_unreachable_endpoint_is_unavailable() -> None:
    """A real connection failure: nothing listens on the endpoint's port (no retries here)."""
    import boto3

    client = boto3.client(
        "bedrock-agent-runtime",
        region_name="us-east-1",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=2),
    )
    provider = BedrockAgentProvider("us-east-1", client=client)
    with pytest.raises(Unavailable) as caught:
        await run(provider, FIRST)
    assert caught.value.reason == "PROVIDER_UNAVAILABLE"
    await provider.close()


def test_window_and_tools(stub: AgentStub) -> None:
    provider = BedrockAgentProvider(
        "us-east-1", client=stub.client, context_windows={f"bedrock-agent/{MODEL}": 32768}
    )
    assert provider.context_window(MODEL) == 32768 and provider.context_window("OTHER/ALIAS") == 8192
    assert provider.supports_tools(MODEL)
