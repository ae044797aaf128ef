"""The Bedrock provider (ConverseStream through boto3).

No Bedrock endpoint can run here, so this is the one place with a mock: botocore's ``Stubber``
answers ``converse_stream`` calls, with the event stream replaced by the recorded ConverseStream
event shapes below (what ``EventStream`` yields when iterated: one single-key dict per event).
Stubber validates the call's parameters against the real service model, so the request shape
(``system``, ``messages``, ``inferenceConfig``, and for tools ``toolConfig`` and the ``toolUse`` /
``toolResult`` blocks) is checked for real. Tool calls use the documented ConverseStream shapes:
``contentBlockStart.start.toolUse``, ``contentBlockDelta.delta.toolUse.input`` fragments,
``contentBlockStop``, then ``messageStop`` with ``stopReason: tool_use``. A Bedrock endpoint that
cannot be reached and missing credentials are real failures, no mock.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import EventStreamError
from botocore.stub import Stubber
from parley.domain.errors import InvalidArgument, ParleyError, ResourceExhausted, Unavailable
from parley.domain.models import StopReason
from parley.providers.llm.base import (
    ChatTurn,
    GenerationRequest,
    ProviderEvent,
    StopEvent,
    TextDeltaEvent,
    ToolCallEvent,
    ToolCallRequest,
    ToolDefinition,
    UsageEvent,
)
from parley.providers.llm.bedrock import BedrockProvider, converse_arguments

from tests.support.net import free_port

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
REQUEST = GenerationRequest(
    MODEL,
    [
        ChatTurn("system", "You are terse."),
        ChatTurn("assistant", "(an old reply whose question was trimmed)"),
        ChatTurn("user", "Hi"),
        ChatTurn("assistant", "Hello."),
        ChatTurn("user", "First question"),
        ChatTurn("user", "Second question"),  # after a failed reply: two user turns in a row
    ],
    max_output_tokens=64,
    temperature=0.3,
)
EXPECTED_PARAMS = {
    "modelId": MODEL,
    "system": [{"text": "You are terse."}],
    "messages": [
        {"role": "user", "content": [{"text": "Hi"}]},
        {"role": "assistant", "content": [{"text": "Hello."}]},
        {"role": "user", "content": [{"text": "First question\n\nSecond question"}]},
    ],
    "inferenceConfig": {"maxTokens": 64, "temperature": 0.3},
}


def recorded_events(stop_reason: str = "end_turn") -> list[dict[str, Any]]:
    """A ConverseStream reply as botocore's EventStream yields it."""
    return [
        {"messageStart": {"role": "assistant"}},
        {"contentBlockDelta": {"delta": {"text": "Hel"}, "contentBlockIndex": 0}},
        {"contentBlockDelta": {"delta": {"text": "lo!"}, "contentBlockIndex": 0}},
        {"contentBlockStop": {"contentBlockIndex": 0}},
        {"messageStop": {"stopReason": stop_reason}},
        {
            "metadata": {
                "usage": {"inputTokens": 25, "outputTokens": 3, "totalTokens": 28},
                "metrics": {"latencyMs": 312},
            }
        },
    ]


class RecordedStream:
    """Stands in for botocore's ``EventStream``: iterable, closable, may fail part-way."""

    def __init__(self, events: Sequence[dict[str, Any]], *, then: Exception | None = None) -> None:
        self.events = list(events)
        self.then = then
        self.closed = threading.Event()
        self.release = threading.Event()  # for a stream that waits (``block``)
        self.block = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for event in self.events:
            if self.closed.is_set():
                return
            yield event
        if self.block:
            self.release.wait(30)
        if self.then is not None:
            raise self.then

    def close(self) -> None:
        self.closed.set()
        self.release.set()


def _client() -> Any:
    return boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def stubbed(
    stream: RecordedStream | None = None, *, expected: dict[str, Any] | None = None, **error: Any
) -> tuple[BedrockProvider, Stubber]:
    """A provider whose client answers one ``converse_stream`` call (with ``stream`` or ``error``)
    made with ``expected`` (default :data:`EXPECTED_PARAMS`)."""
    expected = EXPECTED_PARAMS if expected is None else expected
    client = _client()
    stubber = Stubber(client)
    if error:
        stubber.add_client_error("converse_stream", expected_params=expected, **error)
    else:
        # Stubber validates the response as a structure; the stream is put in after validation.
        response: dict[str, Any] = {"stream": {}}
        stubber.add_response("converse_stream", response, expected)
        response["stream"] = stream
    stubber.activate()
    return BedrockProvider("us-east-1", client=client), stubber


async def _run(provider: BedrockProvider, request: GenerationRequest = REQUEST) -> list[ProviderEvent]:
    events: list[ProviderEvent] = []
    try:
        async for event in provider.stream(request):
            events.append(event)
    finally:
        await provider.close()
    return events


def test_request_arguments() -> None:
    assert converse_arguments(REQUEST) == EXPECTED_PARAMS
    plain = converse_arguments(GenerationRequest(MODEL, [ChatTurn("user", "x")], 10))
    assert plain == {
        "modelId": MODEL,
        "messages": [{"role": "user", "content": [{"text": "x"}]}],
        "inferenceConfig": {"maxTokens": 10},
    }


async def test_events_are_mapped_in_order() -> None:
    provider, stubber = stubbed(RecordedStream(recorded_events()))
    events = await _run(provider)
    assert events == [
        TextDeltaEvent("Hel"),
        TextDeltaEvent("lo!"),
        UsageEvent(25, 3),
        StopEvent(StopReason.END_TURN),
    ]
    stubber.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("bedrock_reason", "stop"),
    [
        ("end_turn", StopReason.END_TURN),
        ("max_tokens", StopReason.MAX_OUTPUT_TOKENS),
        ("stop_sequence", StopReason.STOP_SEQUENCE),
        ("content_filtered", StopReason.CONTENT_FILTER),
        ("guardrail_intervened", StopReason.CONTENT_FILTER),
        ("tool_use", StopReason.END_TURN),  # no toolUse block came: there is nothing to run
    ],
)
async def test_stop_reasons(bedrock_reason: str, stop: StopReason) -> None:
    provider, _ = stubbed(RecordedStream(recorded_events(bedrock_reason)))
    assert (await _run(provider))[-1] == StopEvent(stop)


async def test_usage_is_estimated_when_the_stream_has_no_metadata() -> None:
    provider, _ = stubbed(RecordedStream(recorded_events()[:-1]))
    *_, usage, stop = await _run(provider)
    assert usage == UsageEvent(provider.count_tokens(MODEL, REQUEST.turns), 2)
    assert stop == StopEvent(StopReason.END_TURN)


@pytest.mark.parametrize(
    ("code", "status", "error", "reason"),
    [
        ("ThrottlingException", 429, ResourceExhausted, "PROVIDER_RATE_LIMITED"),
        ("ServiceUnavailableException", 503, Unavailable, "PROVIDER_UNAVAILABLE"),
        ("InternalServerException", 500, Unavailable, "PROVIDER_UNAVAILABLE"),
        ("ModelNotReadyException", 429, ResourceExhausted, "PROVIDER_RATE_LIMITED"),
        ("ValidationException", 400, InvalidArgument, "PROVIDER_REJECTED_INPUT"),
        ("AccessDeniedException", 403, Unavailable, "PROVIDER_ERROR"),
        ("ResourceNotFoundException", 404, Unavailable, "PROVIDER_ERROR"),
    ],
)
async def test_errors_before_the_stream_are_mapped(
    code: str, status: int, error: type[ParleyError], reason: str
) -> None:
    provider, _ = stubbed(service_error_code=code, http_status_code=status, service_message="no")
    with pytest.raises(error) as caught:
        await _run(provider)
    assert caught.value.reason == reason
    assert caught.value.metadata == {"provider": "bedrock", "status": str(status)}


async def test_an_error_inside_the_stream_ends_it_after_the_text_so_far() -> None:
    failure = EventStreamError(
        {"Error": {"Code": "modelStreamErrorException", "Message": "the model failed"}}, "ConverseStream"
    )
    provider, _ = stubbed(RecordedStream(recorded_events()[:3], then=failure))
    seen: list[ProviderEvent] = []
    with pytest.raises(Unavailable) as caught:
        async for event in provider.stream(REQUEST):
            seen.append(event)
    await provider.close()
    assert seen == [TextDeltaEvent("Hel"), TextDeltaEvent("lo!")]
    assert caught.value.reason == "PROVIDER_UNAVAILABLE" and caught.value.metadata == {"provider": "bedrock"}


async def test_a_stream_without_message_stop_is_unavailable() -> None:
    provider, _ = stubbed(RecordedStream(recorded_events()[:3]))
    with pytest.raises(Unavailable) as caught:
        await _run(provider)
    assert caught.value.reason == "PROVIDER_UNAVAILABLE"


async def test_closing_the_stream_closes_the_event_stream() -> None:
    stream = RecordedStream(recorded_events()[:2])
    stream.block = True  # the model "thinks" after the first delta
    provider, _ = stubbed(stream)
    events = provider.stream(REQUEST)
    assert await anext(events) == TextDeltaEvent("Hel")
    await events.aclose()
    assert stream.closed.is_set()
    await provider.close()


async def test_unreachable_endpoint_is_unavailable() -> None:
    """A real connection failure: nothing listens on the endpoint's port (no retries here)."""
    client = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=2),
    )
    with pytest.raises(Unavailable) as caught:
        await _run(BedrockProvider("us-east-1", client=client))
    assert caught.value.reason == "PROVIDER_UNAVAILABLE" and caught.value.metadata == {"provider": "bedrock"}


async def test_missing_credentials_are_a_provider_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """The standard AWS credential chain finds nothing: a configuration problem (PROVIDER_ERROR)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    provider = BedrockProvider("us-east-1", max_retries=0, endpoint_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(Unavailable) as caught:
        await _run(provider)
    assert caught.value.reason == "PROVIDER_ERROR" and "credentials" in caught.value.message


async def test_context_window_from_the_table_or_settings() -> None:
    provider = BedrockProvider("us-east-1", client=_client(), context_windows={"bedrock/my-model": 4096})
    assert provider.context_window("us.anthropic.claude-3-5-sonnet-20241022-v2:0") == 200_000
    assert provider.context_window("my-model") == 4096
    assert provider.context_window("unknown.model") == 8192
    await provider.close()


# --- tool calls ---------------------------------------------------------------------------------

WEATHER = ToolDefinition(
    "get_weather",
    "The weather now in a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
CLOCK = ToolDefinition("get_time", "", {"type": "object", "properties": {"tz": {"type": "string"}}})
W1 = ToolCallRequest("tooluse_w1", "get_weather", '{"city": "Paris"}')
T2 = ToolCallRequest("tooluse_t2", "get_time", '{"tz": "Europe/Par')  # malformed: cut off
TOOL_REQUEST = GenerationRequest(
    MODEL,
    [
        ChatTurn("system", "You are terse."),
        ChatTurn("tool", "stale", tool_call_id="tooluse_trimmed"),  # its call was trimmed away
        ChatTurn("user", "Weather and time in Paris?"),
        ChatTurn("assistant", "Checking.", tool_calls=[W1, T2]),
        ChatTurn("tool", '{"sky": "clear"}', tool_call_id="tooluse_w1"),
        ChatTurn("tool", "error: the arguments are not valid JSON", tool_call_id="tooluse_t2"),
        ChatTurn("user", "And tomorrow?"),
    ],
    max_output_tokens=64,
    tools=[WEATHER, CLOCK],
)
TOOL_EXPECTED_PARAMS = {
    "modelId": MODEL,
    "system": [{"text": "You are terse."}],
    "messages": [
        {"role": "user", "content": [{"text": "Weather and time in Paris?"}]},
        {
            "role": "assistant",
            "content": [
                {
                    "text": "Checking.\n\n[the arguments of tool call tooluse_t2 were not a JSON object: "
                    '{"tz": "Europe/Par]'
                },
                {"toolUse": {"toolUseId": "tooluse_w1", "name": "get_weather", "input": {"city": "Paris"}}},
                {"toolUse": {"toolUseId": "tooluse_t2", "name": "get_time", "input": {}}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"toolResult": {"toolUseId": "tooluse_w1", "content": [{"text": '{"sky": "clear"}'}]}},
                {
                    "toolResult": {
                        "toolUseId": "tooluse_t2",
                        "content": [{"text": "error: the arguments are not valid JSON"}],
                    }
                },
                {"text": "And tomorrow?"},
            ],
        },
    ],
    "inferenceConfig": {"maxTokens": 64},
    "toolConfig": {
        "tools": [
            {
                "toolSpec": {
                    "name": "get_weather",
                    "description": "The weather now in a city.",
                    "inputSchema": {"json": dict(WEATHER.parameters)},
                }
            },
            {"toolSpec": {"name": "get_time", "inputSchema": {"json": dict(CLOCK.parameters)}}},
        ]
    },
}


def recorded_tool_events(stop_reason: str = "tool_use") -> list[dict[str, Any]]:
    """A ConverseStream reply with text, then two toolUse blocks (the second without input)."""
    return [
        {"messageStart": {"role": "assistant"}},
        {"contentBlockDelta": {"delta": {"text": "Checking."}, "contentBlockIndex": 0}},
        {"contentBlockStop": {"contentBlockIndex": 0}},
        {
            "contentBlockStart": {
                "start": {"toolUse": {"toolUseId": "tooluse_w1", "name": "get_weather"}},
                "contentBlockIndex": 1,
            }
        },
        {"contentBlockDelta": {"delta": {"toolUse": {"input": '{"ci'}}, "contentBlockIndex": 1}},
        {"contentBlockDelta": {"delta": {"toolUse": {"input": 'ty": "Pa'}}, "contentBlockIndex": 1}},
        {"contentBlockDelta": {"delta": {"toolUse": {"input": 'ris"}'}}, "contentBlockIndex": 1}},
        {"contentBlockStop": {"contentBlockIndex": 1}},
        {
            "contentBlockStart": {
                "start": {"toolUse": {"toolUseId": "tooluse_t2", "name": "get_time"}},
                "contentBlockIndex": 2,
            }
        },
        {"contentBlockStop": {"contentBlockIndex": 2}},
        {"messageStop": {"stopReason": stop_reason}},
        {"metadata": {"usage": {"inputTokens": 80, "outputTokens": 41, "totalTokens": 121}}},
    ]


def test_tool_request_arguments() -> None:
    assert converse_arguments(TOOL_REQUEST) == TOOL_EXPECTED_PARAMS


async def test_tool_use_blocks_become_tool_calls() -> None:
    provider, stubber = stubbed(RecordedStream(recorded_tool_events()), expected=TOOL_EXPECTED_PARAMS)
    events = await _run(provider, TOOL_REQUEST)
    assert events == [
        TextDeltaEvent("Checking."),
        ToolCallEvent(W1),
        ToolCallEvent(ToolCallRequest("tooluse_t2", "get_time", "{}")),
        UsageEvent(80, 41),
        StopEvent(StopReason.TOOL_USE),
    ]
    stubber.assert_no_pending_responses()


async def test_without_tools_the_tool_steps_are_sent_as_text() -> None:
    """Converse refuses toolUse/toolResult blocks without toolConfig (and has no "none" choice)."""
    request = dataclasses.replace(TOOL_REQUEST, tools=())
    expected = {
        "modelId": MODEL,
        "system": [{"text": "You are terse."}],
        "messages": [
            {"role": "user", "content": [{"text": "Weather and time in Paris?"}]},
            {
                "role": "assistant",
                "content": [
                    {
                        "text": 'Checking.\n\n[called tool get_weather with {"city": "Paris"}]\n\n'
                        '[called tool get_time with {"tz": "Europe/Par]'
                    }
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "text": '[result of tool get_weather (call tooluse_w1): {"sky": "clear"}]\n\n'
                        "[result of tool get_time (call tooluse_t2): error: the arguments are not valid JSON]"
                        "\n\nAnd tomorrow?"
                    }
                ],
            },
        ],
        "inferenceConfig": {"maxTokens": 64},
    }
    assert converse_arguments(request) == expected
    provider, stubber = stubbed(RecordedStream(recorded_events()), expected=expected)
    assert (await _run(provider, request))[-1] == StopEvent(StopReason.END_TURN)
    stubber.assert_no_pending_responses()


async def test_a_tool_use_block_cut_by_max_tokens_is_not_a_call() -> None:
    events = recorded_tool_events("max_tokens")
    del events[7:10]  # the first block never stops; the second never starts
    provider, _ = stubbed(RecordedStream(events), expected=TOOL_EXPECTED_PARAMS)
    assert await _run(provider, TOOL_REQUEST) == [
        TextDeltaEvent("Checking."),
        UsageEvent(80, 41),
        StopEvent(StopReason.MAX_OUTPUT_TOKENS),
    ]


async def test_usage_estimate_counts_tool_input_fragments() -> None:
    provider, _ = stubbed(RecordedStream(recorded_tool_events()[:-1]), expected=TOOL_EXPECTED_PARAMS)
    *_, usage, stop = await _run(provider, TOOL_REQUEST)
    assert usage == UsageEvent(provider.count_tokens(MODEL, TOOL_REQUEST.turns), 4)
    assert stop == StopEvent(StopReason.TOOL_USE)


async def test_every_bedrock_model_is_offered_tools() -> None:
    provider = BedrockProvider("us-east-1", client=_client())
    assert provider.supports_tools(MODEL) is True
    await provider.close()
