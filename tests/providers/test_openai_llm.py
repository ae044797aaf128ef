"""The OpenAI-compatible chat provider, alone and inside a Parley server.

Successful generations run against a real OpenAI-compatible server: llama.cpp's server engine
serving SmolLM2 (``tests/support/llama_server.py``). Failure modes that server cannot produce on
demand (HTTP 429, a stream cut mid-reply, an error event, a content filter) come from a small
local HTTP stand-in speaking the same SSE wire format (``tests/support/openai_standin.py``); an
unreachable provider is a port with nothing listening. Tool calls come from the stand-in too
(SmolLM2 does not call tools on demand): its scripted steps stream them fragment by fragment, as
OpenAI does, and it records the request bodies the provider sends back.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import httpx
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from openai.types.chat.chat_completion_chunk import ChoiceDeltaToolCall, ChoiceDeltaToolCallFunction
from parley.domain.errors import InvalidArgument, ParleyError, ResourceExhausted, Unavailable
from parley.domain.models import StopReason
from parley.providers.llm.base import (
    ChatTurn,
    GenerationRequest,
    LLMProvider,
    ProviderEvent,
    StopEvent,
    TextDeltaEvent,
    ToolCallEvent,
    ToolCallRequest,
    ToolDefinition,
    UsageEvent,
)
from parley.providers.llm.hosted import DEFAULT_CONTEXT_WINDOW, context_window_for, estimate_tokens
from parley.providers.llm.local import default_model_path
from parley.providers.llm.openai import OpenAIChatProvider
from parley.providers.llm.openai_wire import EventStream, ToolCallAssembler, decode_chunk
from parley_proto.v1 import agent_service_pb2 as apb
from parley_proto.v1 import chat_service_pb2 as pb

from tests.support.client import UserClient, error_info, expect_error, new_user
from tests.support.llama_server import MODEL_ALIAS, running_llama_server
from tests.support.net import free_port
from tests.support.openai_standin import ScriptedCall, StandIn, Step, running_standin
from tests.support.server import ServerProcess

TURNS = [ChatTurn("system", "You are a concise assistant."), ChatTurn("user", "Name one colour.")]


@pytest.fixture(scope="module")
def llama_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_llama_server(default_model_path(), tmp_path_factory.mktemp("llama")) as url:
        yield url


@pytest.fixture(scope="module")
def standin_url() -> Iterator[str]:
    with running_standin() as url:
        yield url


@pytest.fixture
def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"


def _provider(base_url: str, name: str = "openai", **kwargs: object) -> OpenAIChatProvider:
    kwargs.setdefault("max_retries", 0)
    return OpenAIChatProvider(name, base_url=base_url, api_key="test-key", **kwargs)  # type: ignore[arg-type]


async def _collect(provider: LLMProvider, model: str, max_output_tokens: int = 8) -> list[ProviderEvent]:
    events: list[ProviderEvent] = []
    try:
        async for event in provider.stream(GenerationRequest(model, TURNS, max_output_tokens, 0.0)):
            events.append(event)
    finally:
        await provider.close()
    return events


def _merged(events: list[ProviderEvent]) -> list[ProviderEvent]:
    """``events`` with consecutive text deltas as one: the provider merges the chunks one read
    brings, and how the stand-in's writes are read depends on timing."""
    out: list[ProviderEvent] = []
    for event in events:
        last = out[-1] if out else None
        if isinstance(event, TextDeltaEvent) and isinstance(last, TextDeltaEvent):
            out[-1] = TextDeltaEvent(last.text + event.text, last.tokens + event.tokens)
        else:
            out.append(event)
    return out


def _check_order(events: list[ProviderEvent]) -> tuple[str, UsageEvent, StopEvent]:
    """TextDeltaEvent*, then exactly one UsageEvent and one StopEvent."""
    *deltas, usage, stop = events
    assert all(isinstance(e, TextDeltaEvent) for e in deltas)
    assert isinstance(usage, UsageEvent) and isinstance(stop, StopEvent)
    return "".join(e.text for e in deltas if isinstance(e, TextDeltaEvent)), usage, stop


# --- the provider on its own -------------------------------------------------------------------


def _server_prompt_tokens(base_url: str, turns: list[ChatTurn]) -> int:
    """The prompt tokens llama.cpp's server counts for ``turns`` (its chat template, its tokenizer)."""
    origin = base_url.removesuffix("/v1")
    messages = [{"role": t.role, "content": t.content} for t in turns]
    prompt = httpx.post(f"{origin}/apply-template", json={"messages": messages}, timeout=10).json()["prompt"]
    tokens = httpx.post(
        f"{origin}/tokenize", json={"content": prompt, "add_special": True, "parse_special": True}, timeout=10
    ).json()["tokens"]
    return len(tokens)


async def test_streams_a_reply_from_a_real_openai_compatible_server(llama_url: str) -> None:
    events = await _collect(_provider(llama_url), MODEL_ALIAS, max_output_tokens=8)
    text, usage, stop = _check_order(events)
    assert text.strip()
    # llama.cpp's server answers stream_options.include_usage: its own prompt count is used, the
    # count its /apply-template + /tokenize give for the same messages.
    assert usage.input_tokens == _server_prompt_tokens(llama_url, TURNS) > 0
    assert 0 < usage.output_tokens == sum(e.tokens for e in events if isinstance(e, TextDeltaEvent)) <= 8
    assert stop.stop_reason in (StopReason.END_TURN, StopReason.MAX_OUTPUT_TOKENS)


async def test_request_shape_and_provider_usage(standin_url: str) -> None:
    StandIn.requests.clear()
    events = await _collect(_provider(standin_url, name="groq"), "any-model", max_output_tokens=5)
    text, usage, stop = _check_order(events)
    assert (text, usage, stop) == ("Hello there.", UsageEvent(20, 3), StopEvent(StopReason.END_TURN))
    sent = StandIn.requests[-1]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["max_tokens"] == 5 and sent["temperature"] == 0.0
    assert sent["messages"] == [{"role": t.role, "content": t.content} for t in TURNS]


async def test_content_filter_is_a_stop_reason(standin_url: str) -> None:
    _, usage, stop = _check_order(await _collect(_provider(standin_url), "content-filter"))
    assert (usage, stop) == (UsageEvent(11, 1), StopEvent(StopReason.CONTENT_FILTER))


@pytest.mark.parametrize(
    ("model", "reason"), [("cut-after-2", "PROVIDER_UNAVAILABLE"), ("error-after-2", "PROVIDER_ERROR")]
)
async def test_an_error_after_the_first_token_ends_the_stream(
    standin_url: str, model: str, reason: str
) -> None:
    provider = _provider(standin_url, max_retries=2)
    seen: list[ProviderEvent] = []
    with pytest.raises(Unavailable) as caught:
        async for event in provider.stream(GenerationRequest(model, TURNS, 50)):
            seen.append(event)
    await provider.close()
    assert _merged(seen) == [TextDeltaEvent("part0 part1 ", tokens=2)]
    assert caught.value.reason == reason and caught.value.metadata["provider"] == "openai"


async def test_chunks_read_at_once_are_one_delta(standin_url: str) -> None:
    """A server that sends five chunks in one write (the client fell behind) gets one delta that
    stands for the five; without usage from the server, the output count is still the chunks."""
    events = await _collect(_provider(standin_url), "burst-5")
    merged = TextDeltaEvent("tok0 tok1 tok2 tok3 tok4 ", tokens=5)
    assert events == [merged, UsageEvent(20, 50), StopEvent(StopReason.END_TURN)]
    events = await _collect(_provider(standin_url), "burst-5-no-usage")
    assert events == [merged, UsageEvent(estimate_tokens(TURNS), 5), StopEvent(StopReason.END_TURN)]


async def test_chunks_read_at_once_over_http_1_1_are_one_delta_and_the_connection_is_kept(
    standin_url: str,
) -> None:
    """Over HTTP/1.1 each event is an HTTP chunk, which the HTTP client hands over one by one
    even when one read brought them all: they are still one delta. After ``[DONE]`` the rest
    of the body is read, so the next reply reuses the connection."""
    StandIn.peers.clear()
    provider = _provider(standin_url)
    try:
        for _ in range(2):
            events = [e async for e in provider.stream(GenerationRequest("chunked-burst-5", TURNS, 16))]
            assert events == [
                TextDeltaEvent("tok0 tok1 tok2 tok3 tok4 ", tokens=5),
                UsageEvent(20, 50),
                StopEvent(StopReason.END_TURN),
            ]
    finally:
        await provider.close()
    assert len(StandIn.peers) == 2 and StandIn.peers[0] == StandIn.peers[1]


async def test_chunks_sent_apart_are_yielded_apart_without_waiting(standin_url: str) -> None:
    """The stand-in sends each chunk only once the previous one came out of the provider: a
    provider that waited for more data to merge would never see it (and the test times out)."""
    StandIn.gate = threading.Semaphore(0)
    provider = _provider(standin_url)
    events: list[ProviderEvent] = []

    async def consume() -> None:
        async for event in provider.stream(GenerationRequest("gated-3", TURNS, 16)):
            events.append(event)
            if isinstance(event, TextDeltaEvent):
                StandIn.gate.release()

    try:
        await asyncio.wait_for(consume(), 10.0)
    finally:
        await provider.close()
    assert events == [
        TextDeltaEvent("part0 "),
        TextDeltaEvent("part1 "),
        TextDeltaEvent("part2 "),
        UsageEvent(20, 3),
        StopEvent(StopReason.END_TURN),
    ]


async def test_a_stream_silent_for_longer_than_the_timeout_is_unavailable(standin_url: str) -> None:
    """The body is read outside the SDK now: a read timeout is still PROVIDER_UNAVAILABLE."""
    StandIn.gate = threading.Semaphore(0)  # never released: the second chunk never comes
    provider = _provider(standin_url, timeout_s=0.3)
    seen: list[ProviderEvent] = []
    with pytest.raises(Unavailable) as caught:
        async for event in provider.stream(GenerationRequest("gated-2", TURNS, 16)):
            seen.append(event)
    await provider.close()
    assert seen == [TextDeltaEvent("part0 ")]
    assert caught.value.reason == "PROVIDER_UNAVAILABLE" and caught.value.metadata == {"provider": "openai"}


async def test_a_chunk_that_is_not_json_ends_the_stream_after_the_text_before_it(standin_url: str) -> None:
    provider = _provider(standin_url, max_retries=2)
    seen: list[ProviderEvent] = []
    with pytest.raises(Unavailable) as caught:
        async for event in provider.stream(GenerationRequest("garbage-after-2", TURNS, 50)):
            seen.append(event)
    await provider.close()
    assert _merged(seen) == [TextDeltaEvent("part0 part1 ", tokens=2)]
    assert caught.value.reason == "PROVIDER_ERROR" and caught.value.metadata == {"provider": "openai"}
    assert str(caught.value) == "openai sent a malformed stream"


#: Four events as servers write them: CRLF and CR line ends, a comment, an event name, a
#: two-line ``data``, no space after ``data:``; then an event the body ends before finishing.
_SSE = (
    b": keep-alive\r\n\r\n"
    b'data: {"a": 1}\r\n\r\n'
    b"event: message\nid: 7\ndata: line one\ndata: line two\n\n"
    b'data:{"b": 2}\r\r'
    b"data: [DONE]\n\n"
    b"data: cut"
)
_SSE_EVENTS = [b'{"a": 1}', b"line one\nline two", b'{"b": 2}', b"[DONE]"]


def test_the_event_stream_splits_events_wherever_the_reads_split_the_body() -> None:
    whole = EventStream()
    assert whole.feed(_SSE) == _SSE_EVENTS
    for cut in range(1, len(_SSE)):
        for second_cut in (cut, min(cut + 1, len(_SSE)), min(cut + 7, len(_SSE))):
            stream = EventStream()
            pieces = (_SSE[:cut], _SSE[cut:second_cut], _SSE[second_cut:])
            assert [e for piece in pieces for e in stream.feed(piece)] == _SSE_EVENTS, (cut, second_cut)


def test_the_assembler_takes_the_fragments_as_decoded_from_the_wire() -> None:
    chunks = [
        b'{"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "call_w1", "type": "function",'
        b' "function": {"name": "get_weather", "arguments": ""}}]}}]}',
        b'{"choices": [{"delta": {"tool_calls": [{"index": 0,'
        b' "function": {"arguments": "{\\"city\\": "}}]}}]}',
        b'{"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "\\"Paris\\"}"}}]},'
        b' "finish_reason": "tool_calls", "logprobs": null}], "system_fingerprint": "x"}',
    ]
    assembler = ToolCallAssembler()
    for data in chunks:
        (choice,) = decode_chunk(data).choices or ()
        assert choice.delta is not None and choice.delta.tool_calls
        assembler.add(choice.delta.tool_calls)
    assert assembler.take() == [W1]


@pytest.mark.parametrize(
    ("status", "error", "reason", "attempts"),
    [
        (429, ResourceExhausted, "PROVIDER_RATE_LIMITED", 3),
        (503, Unavailable, "PROVIDER_UNAVAILABLE", 3),
        (500, Unavailable, "PROVIDER_UNAVAILABLE", 3),
        (400, InvalidArgument, "PROVIDER_REJECTED_INPUT", 1),
        (401, Unavailable, "PROVIDER_ERROR", 1),
    ],
)
async def test_http_errors_before_the_first_token_are_retried_then_mapped(
    standin_url: str, status: int, error: type[ParleyError], reason: str, attempts: int
) -> None:
    """429 and 5xx are retried (max_retries=2: three attempts) before they are reported."""
    model = f"status-{status}"
    StandIn.hits[model] = 0
    with pytest.raises(error) as caught:
        await _collect(_provider(standin_url, name="groq", max_retries=2), model)
    assert caught.value.reason == reason
    assert caught.value.metadata == {"provider": "groq", "status": str(status)}
    assert StandIn.hits[model] == attempts


async def test_unreachable_provider_is_unavailable(closed_url: str) -> None:
    with pytest.raises(Unavailable) as caught:
        await _collect(_provider(closed_url, name="down", max_retries=1), "any")
    assert caught.value.reason == "PROVIDER_UNAVAILABLE"
    assert caught.value.metadata == {"provider": "down"}


async def test_closing_the_stream_closes_the_connection(standin_url: str) -> None:
    StandIn.disconnected.clear()
    provider = _provider(standin_url)
    stream = provider.stream(GenerationRequest("endless", TURNS, 10_000))
    deltas = 0
    async for event in stream:
        deltas += isinstance(event, TextDeltaEvent)
        if deltas == 3:
            break
    await stream.aclose()
    await provider.close()
    # The stand-in notices on its next write (every 20 ms); the bound only guards a hang.
    assert await _wait(StandIn.disconnected, 10.0)


async def _wait(event: threading.Event, seconds: float) -> bool:
    return await asyncio.to_thread(event.wait, seconds)


def test_context_windows_and_the_token_estimate() -> None:
    overrides = {"openai/smollm2": 2048}
    assert _provider("http://x/v1").context_window("gpt-4o-mini-2024-07-18") == 128_000
    assert _provider("http://x/v1", context_windows=overrides).context_window("smollm2") == 2048
    assert _provider("http://x/v1").context_window("smollm2") == DEFAULT_CONTEXT_WINDOW == 8192
    assert context_window_for("groq", "llama-3.1-8b-instant", {}) == 131_072
    assert context_window_for("bedrock", "us.anthropic.claude-3-5-sonnet-20241022-v2:0", {}) == 200_000
    # 40 ASCII characters: 10 tokens + 4 per message + 3 for the reply.
    assert estimate_tokens([ChatTurn("user", "abcd" * 10)]) == 17
    # Arabic letters are two UTF-8 bytes: the estimate counts them as half a token each.
    assert estimate_tokens([ChatTurn("user", "م" * 40)]) == 20 + 7


# --- tool calls (the stand-in's scripted steps) ------------------------------------------------

WEATHER = ToolDefinition(
    "get_weather",
    "The weather now in a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
CLOCK = ToolDefinition("get_time", "", {"type": "object", "properties": {"tz": {"type": "string"}}})
#: Text, then two calls whose argument pieces the stand-in interleaves by index.
TWO_CALLS = Step(
    text=("Let me ", "check."),
    calls=(
        ScriptedCall("call_w1", "get_weather", ('{"ci', 'ty": "Pa', 'ris"}')),
        ScriptedCall("call_t2", "get_time", ('{"tz": ', '"Europe/Paris"}')),
    ),
    usage=(42, 17),
)
W1 = ToolCallRequest("call_w1", "get_weather", '{"city": "Paris"}')
T2 = ToolCallRequest("call_t2", "get_time", '{"tz": "Europe/Paris"}')


async def _run(provider: LLMProvider, request: GenerationRequest) -> list[ProviderEvent]:
    try:
        return [event async for event in provider.stream(request)]
    finally:
        await provider.close()


def _script(*steps: Step) -> None:
    StandIn.steps.clear()
    StandIn.steps.extend(steps)
    StandIn.requests.clear()


async def test_streamed_tool_call_fragments_are_assembled_into_whole_calls(standin_url: str) -> None:
    _script(TWO_CALLS)
    request = GenerationRequest("tools-weather", TURNS, 64, tools=[WEATHER, CLOCK])
    events = await _run(_provider(standin_url), request)
    assert _merged(events) == [
        TextDeltaEvent("Let me check.", tokens=2),
        ToolCallEvent(W1),
        ToolCallEvent(T2),
        UsageEvent(42, 17),
        StopEvent(StopReason.TOOL_USE),
    ]
    sent = StandIn.requests[-1]
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": WEATHER.description,
                "parameters": WEATHER.parameters,
            },
        },
        {
            "type": "function",
            "function": {"name": "get_time", "description": "", "parameters": CLOCK.parameters},
        },
    ]
    assert "tool_choice" not in sent and sent["messages"] == [
        {"role": t.role, "content": t.content} for t in TURNS
    ]


async def test_tool_results_go_back_in_the_wire_shape(standin_url: str) -> None:
    """A whole loop: the calls of step one come back as an assistant turn and two tool turns."""
    _script(TWO_CALLS, Step(text=("Clear skies ", "at noon.")))
    request = GenerationRequest("tools-weather", TURNS, 64, tools=[WEATHER, CLOCK])
    first = await _run(_provider(standin_url), request)
    calls = [e.call for e in first if isinstance(e, ToolCallEvent)]
    turns = [
        *TURNS,
        ChatTurn("assistant", "Let me check.", tool_calls=calls),
        ChatTurn("tool", '{"sky": "clear"}', tool_call_id=calls[0].id),
        ChatTurn("tool", "12:00", tool_call_id=calls[1].id),
    ]
    second = await _run(
        _provider(standin_url), GenerationRequest("tools-weather", turns, 64, tools=[WEATHER])
    )
    assert _merged(second) == [
        TextDeltaEvent("Clear skies at noon.", tokens=2),
        UsageEvent(30, 9),
        StopEvent(StopReason.END_TURN),
    ]
    sent = StandIn.requests[-1]
    assert sent["messages"][len(TURNS) :] == [
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "call_w1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": W1.arguments},
                },
                {
                    "id": "call_t2",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": T2.arguments},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_w1", "content": '{"sky": "clear"}'},
        {"role": "tool", "tool_call_id": "call_t2", "content": "12:00"},
    ]
    assert [t["function"]["name"] for t in sent["tools"]] == ["get_weather"]


async def test_no_tools_sent_when_none_and_results_of_trimmed_calls_dropped(standin_url: str) -> None:
    """An assistant turn of calls only has ``content: null``; a result whose call was trimmed
    from the history is not sent (the API refuses it)."""
    StandIn.requests.clear()
    turns = [
        ChatTurn("system", "Be brief."),
        ChatTurn("tool", "stale", tool_call_id="call_trimmed"),
        ChatTurn("user", "What time is it?"),
        ChatTurn("assistant", "", tool_calls=[ToolCallRequest("call_t2", "get_time", "{}")]),
        ChatTurn("tool", "12:00", tool_call_id="call_t2"),
    ]
    events = await _run(_provider(standin_url), GenerationRequest("any-model", turns, 16))
    assert events[-1] == StopEvent(StopReason.END_TURN)
    sent = StandIn.requests[-1]
    assert "tools" not in sent
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What time is it?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_t2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_t2", "content": "12:00"},
    ]


async def test_a_call_without_id_or_arguments_gets_an_id_and_empty_arguments(standin_url: str) -> None:
    _script(Step(calls=(ScriptedCall("", "get_time"),)))
    events = await _run(_provider(standin_url), GenerationRequest("tools-x", TURNS, 16, tools=[CLOCK]))
    call, usage, stop = events
    assert isinstance(call, ToolCallEvent) and re.fullmatch(r"call_[0-9a-f]{32}", call.call.id)
    assert (call.call.name, call.call.arguments) == ("get_time", "{}")
    assert (usage, stop) == (UsageEvent(30, 9), StopEvent(StopReason.TOOL_USE))


@pytest.mark.parametrize(
    ("finish", "calls", "stop"),
    [
        ("stop", [W1], StopReason.TOOL_USE),  # some compatible servers finish calls with "stop"
        ("length", [], StopReason.MAX_OUTPUT_TOKENS),  # cut off: the arguments are incomplete
        ("content_filter", [], StopReason.CONTENT_FILTER),
    ],
)
async def test_how_the_finish_reason_decides_the_calls(
    standin_url: str, finish: str, calls: list[ToolCallRequest], stop: StopReason
) -> None:
    _script(
        Step(
            text=("On it.",),
            calls=(ScriptedCall("call_w1", "get_weather", ('{"city": ', '"Paris"}')),),
            finish=finish,
        )
    )
    events = await _run(_provider(standin_url), GenerationRequest("tools-x", TURNS, 16, tools=[WEATHER]))
    assert events == [
        TextDeltaEvent("On it."),
        *(ToolCallEvent(c) for c in calls),
        UsageEvent(30, 9),
        StopEvent(stop),
    ]


async def test_a_tool_calls_finish_without_calls_is_end_turn(standin_url: str) -> None:
    _script(Step(text=("Nothing to call.",), finish="tool_calls"))
    events = await _run(_provider(standin_url), GenerationRequest("tools-x", TURNS, 16, tools=[WEATHER]))
    assert events[-1] == StopEvent(StopReason.END_TURN)


def test_the_assembler_takes_repeated_names_and_unindexed_whole_calls() -> None:
    """What some compatible servers send: id and name on every fragment, or whole calls without
    ``index`` (the SDK does not validate chunks, so ``index`` can be missing)."""
    assembler = ToolCallAssembler()
    for piece in ('{"city":', ' "Paris"}'):
        function = ChoiceDeltaToolCallFunction(name="get_weather", arguments=piece)
        assembler.add([ChoiceDeltaToolCall(index=0, id="call_w1", type="function", function=function)])
    assert assembler.take() == [W1] and not assembler
    for call in (W1, T2):
        function = ChoiceDeltaToolCallFunction(name=call.name, arguments=call.arguments)
        assembler.add([ChoiceDeltaToolCall.model_construct(id=call.id, type="function", function=function)])
    assert assembler.take() == [W1, T2]


def test_every_openai_compatible_model_is_offered_tools() -> None:
    assert _provider("http://x/v1").supports_tools("gpt-4o-mini") is True


# --- through a Parley server ------------------------------------------------------------------


@pytest.fixture(scope="module")
def hosted(
    server_factory: Callable[..., ServerProcess], llama_url: str, standin_url: str
) -> Iterator[grpc.Channel]:
    """A Parley server whose ``openai`` provider is the llama.cpp server, with two more endpoints:
    ``standin`` (the stand-in) and ``down`` (nothing listening)."""
    proc = server_factory(
        openai_api_key="test-key",
        openai_base_url=llama_url,
        openai_compatible=json.dumps(
            {"standin": {"base_url": standin_url}, "down": {"base_url": f"http://127.0.0.1:{free_port()}/v1"}}
        ),
        model_aliases=json.dumps({"fast": f"openai/{MODEL_ALIAS}"}),
        model_context_windows=json.dumps({f"openai/{MODEL_ALIAS}": 2048}),
        provider_max_retries="2",
    )
    with grpc.insecure_channel(proc.target) as channel:
        yield channel


@pytest.fixture
def carol(hosted: grpc.Channel) -> UserClient:
    return new_user(hosted, prefix="carol")


def _kind(event: pb.ChatEvent) -> str:
    return str(event.WhichOneof("event"))


@pytest.mark.parametrize("model", [f"openai/{MODEL_ALIAS}", "fast"])
def test_a_conversation_on_a_hosted_model_streams_and_stores_usage(carol: UserClient, model: str) -> None:
    session = carol.create_session(carol.create_agent(model=model, max_output_tokens=12).name)
    for text in ("Hello! Name a fruit.", "And a colour?"):
        events = carol.send(session.name, text)
        kinds = [_kind(e) for e in events]
        assert kinds[0] == "message_accepted" and kinds[-2:] == ["usage", "message_completed"]
        assert set(kinds[1:-2]) == {"text_delta"}
        reply = events[-1].message_completed.message
        assert reply.model == f"openai/{MODEL_ALIAS}"
        assert reply.status == pb.Message.STATUS_COMPLETE
        assert reply.text == "".join(e.text_delta.text for e in events if _kind(e) == "text_delta")
        assert reply.usage.input_tokens > 0 and 0 < reply.usage.output_tokens <= 12
    stored = carol.messages(session.name)
    assert [m.role for m in stored] == [pb.Message.ROLE_USER, pb.Message.ROLE_ASSISTANT] * 2
    assert stored[-1] == reply and stored[-1].usage.input_tokens > stored[1].usage.input_tokens


def _failed_send(
    user: UserClient, model: str, code: grpc.StatusCode, reason: str
) -> tuple[list[pb.ChatEvent], dict[str, str]]:
    session = user.create_session(user.create_agent(model=model).name)
    events: list[pb.ChatEvent] = []
    with expect_error(code, reason) as err:
        for event in user.stubs.chat.SendMessage(
            pb.SendMessageRequest(session=session.name, text="Hi there")
        ):
            events.append(event)
    assert err.error is not None
    info = error_info(err.error)
    assert info is not None
    assert _kind(events[0]) == "message_accepted"
    # The failure is also an `error` event (for REST/SSE clients), with the same ErrorInfo.
    assert _kind(events[-1]) == "error"
    assert events[-1].error.code == code.value[0] and events[-1].error.message == err.error.details()
    sent = error_details_pb2.ErrorInfo()
    assert events[-1].error.details[0].Unpack(sent) and sent.reason == reason
    events = events[:-1]
    stored = user.messages(session.name)
    # The user message is kept whole; the reply is stored with the reason it ended.
    assert [m.role for m in stored] == [pb.Message.ROLE_USER, pb.Message.ROLE_ASSISTANT]
    assert stored[0] == events[0].message_accepted.user_message and stored[0].text == "Hi there"
    assert stored[1].name == events[0].message_accepted.assistant_message
    assert stored[1].stop_reason == pb.STOP_REASON_ERROR
    return events, dict(info.metadata) | {"status": str(stored[1].status), "text": stored[1].text}


def test_provider_down_is_unavailable_and_the_user_message_is_kept(carol: UserClient) -> None:
    events, meta = _failed_send(carol, "down/any-model", grpc.StatusCode.UNAVAILABLE, "PROVIDER_UNAVAILABLE")
    assert meta["provider"] == "down"
    assert meta["status"] == str(pb.Message.STATUS_FAILED) and meta["text"] == ""
    assert len(events) == 1


def test_provider_rate_limit_is_resource_exhausted(carol: UserClient) -> None:
    StandIn.hits["status-429"] = 0
    _, meta = _failed_send(
        carol, "standin/status-429", grpc.StatusCode.RESOURCE_EXHAUSTED, "PROVIDER_RATE_LIMITED"
    )
    assert meta["provider"] == "standin" and meta["status"] == str(pb.Message.STATUS_FAILED)
    assert StandIn.hits["status-429"] == 3  # PARLEY_PROVIDER_MAX_RETRIES=2


def test_an_error_after_the_first_token_stores_the_reply_incomplete(carol: UserClient) -> None:
    events, meta = _failed_send(
        carol, "standin/cut-after-2", grpc.StatusCode.UNAVAILABLE, "PROVIDER_UNAVAILABLE"
    )
    assert "".join(e.text_delta.text for e in events[1:]) == "part0 part1 "  # in one delta or two
    assert meta["status"] == str(pb.Message.STATUS_INCOMPLETE) and meta["text"] == "part0 part1 "


def test_content_filter_stop_reason_and_provider_usage_are_stored(carol: UserClient) -> None:
    session = carol.create_session(carol.create_agent(model="standin/content-filter").name)
    reply = carol.send(session.name, "Something")[-1].message_completed.message
    assert reply.stop_reason == pb.STOP_REASON_CONTENT_FILTER and reply.text == "I cannot"
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (11, 1)
    assert carol.messages(session.name)[-1] == reply


def test_a_provider_that_is_not_switched_on_is_refused(carol: UserClient) -> None:
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_MODEL") as err:
        carol.create_agent(model="bedrock/anthropic.claude-3-haiku")
    assert err.error is not None and "PARLEY_BEDROCK_REGION" in err.error.details()
    assert "fast" in err.error.details() and "standin/<model>" in err.error.details()
    agent = carol.create_agent(model="fast")
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_MODEL"):
        carol.stubs.agents.UpdateAgent(
            apb.UpdateAgentRequest(
                agent=apb.Agent(name=agent.name, model="nowhere/model"),
                update_mask=field_mask_pb2.FieldMask(paths=["model"]),
            )
        )
    assert carol.stubs.agents.ListAgents(apb.ListAgentsRequest()).agents == [agent]


def test_cancel_closes_the_provider_connection(carol: UserClient) -> None:
    StandIn.disconnected.clear()
    session = carol.create_session(carol.create_agent(model="standin/endless", max_output_tokens=10_000).name)
    call = carol.stubs.chat.SendMessage(pb.SendMessageRequest(session=session.name, text="Go on"))
    events = []
    for event in call:
        events.append(event)
        if sum(_kind(e) == "text_delta" for e in events) >= 3:
            call.cancel()
            break
    assert StandIn.disconnected.wait(10.0)
    name = events[0].message_accepted.assistant_message
    reply = _wait_for_message(carol, name)
    assert reply.status == pb.Message.STATUS_INCOMPLETE and reply.stop_reason == pb.STOP_REASON_CANCELLED


def _wait_for_message(user: UserClient, name: str) -> pb.Message:
    """The stored message ``name``; the partial reply is written just after the cancel lands."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return user.stubs.chat.GetMessage(pb.GetMessageRequest(name=name)).message
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND and time.monotonic() < deadline
            time.sleep(0.05)
