"""An agent on ``bedrock-agent/...`` through the real chat engine, tool loop and storage, in process.

The provider is the real ``BedrockAgentProvider``; only its boto3 client is stubbed, because no
Bedrock endpoint can run here: botocore's Stubber answers ``invoke_agent`` with real event-stream
bytes of the documented InvokeAgent events (``tests/support/bedrock_agent_stream.py``). What is
checked is what Parley sends Bedrock along a conversation (one Bedrock session per branch, only
the newest message while a branch continues, a new seeded session after a fork or a regenerate)
and that the reply streams and is stored, with its knowledge-base citations.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from google.protobuf import json_format
from parley.api.convert import message_to_proto
from parley.domain.branches import Branches
from parley.domain.errors import FailedPrecondition
from parley.domain.models import (
    Citation,
    CitationSource,
    MessageStatus,
    Role,
    StopReason,
    ToolKind,
    ToolSpec,
)
from parley.domain.names import branch_name, message_name
from parley.domain.pagination import page_request
from parley.providers.llm.bedrock_agent import BedrockAgentProvider
from parley.providers.llm.registry import ModelRegistry
from parley.runs.events import Accepted, ActionRequired, Completed, Delta, Failed, ToolInputs

from tests.support.bedrock_agent_stream import AgentStub, chunk, return_control
from tests.support.scripted import MODEL as SCRIPTED
from tests.support.scripted import Domain, collect

AGENT = "bedrock-agent/AGENT12345/TSTALIASID"
WEATHER = ToolSpec(
    "get_weather",
    "The weather in a city, as the client app reads it.",
    {"type": "object", "properties": {"city": {"type": "string"}}},
    ToolKind.CLIENT,
)
#: A knowledge-base citation as InvokeAgent sends it in ``chunk.attribution.citations``.
CITED = {
    "generatedResponsePart": {
        "textResponsePart": {"text": "Paris is the capital", "span": {"start": 0, "end": 19}}
    },
    "retrievedReferences": [
        {
            "content": {"text": "Paris est la capitale de la France. 🗼", "type": "TEXT"},
            "location": {"type": "S3", "s3Location": {"uri": "s3://kb/france.txt"}},
            "metadata": {"x-amz-bedrock-kb-source-uri": "s3://kb/france.txt", "page": 3},
        },
        {
            "content": {"text": "France: capital Paris."},
            "location": {"type": "WEB", "webLocation": {"url": "https://example.org/fr"}},
        },
    ],
}
#: One more, in the second chunk; its span (offsets into the whole reply) is stored unchanged.
CITED_LATER = {
    "generatedResponsePart": {"textResponsePart": {"text": "France", "span": {"start": 24, "end": 29}}},
    "retrievedReferences": [{"content": {"text": "La France."}}],
}
STORED_CITATION = Citation(
    "Paris is the capital",
    0,
    19,
    (
        CitationSource(
            "Paris est la capitale de la France. 🗼",
            "s3://kb/france.txt",
            "S3",
            {"x-amz-bedrock-kb-source-uri": "s3://kb/france.txt", "page": "3"},
        ),
        CitationSource("France: capital Paris.", "https://example.org/fr", "WEB"),
    ),
)
STORED_LATER = Citation("France", 24, 29, (CitationSource("La France."),))


@pytest.fixture
async def agents(template_db: Path, tmp_path: Path) -> AsyncIterator[tuple[Domain, AgentStub]]:
    """A domain whose registry has the Bedrock Agents provider on a stubbed client."""
    path = tmp_path / "parley.db"
    await asyncio.to_thread(shutil.copyfile, template_db, path)
    domain = Domain(f"sqlite+aiosqlite:///{path}")
    stub = AgentStub()
    provider = BedrockAgentProvider("us-east-1", client=stub.client)
    domain.models = ModelRegistry({"bedrock-agent": provider, "scripted": domain.provider}, {}, SCRIPTED)
    await domain.start()
    yield domain, stub
    await domain.close()
    await provider.close()


async def test_an_agent_streams_replies_and_each_branch_is_one_bedrock_session(
    agents: tuple[Domain, AgentStub],
) -> None:
    domain, stub = agents
    session = await domain.new_session(model=AGENT)
    stub.answer([chunk("Hello! "), chunk("How can I help?")])
    first = await collect(await domain.send(session, "Hi"))
    assert [e.event.text for e in first if isinstance(e.event, Delta)] == ["Hello! ", "How can I help?"]
    done = first[-1].event
    assert isinstance(done, Completed) and done.message.text == "Hello! How can I help?"
    assert done.message.status is MessageStatus.COMPLETE and done.message.model == AGENT
    assert done.message.output_tokens > 0  # the estimate: InvokeAgent reports no counts

    stub.answer([chunk("Paris.")])
    second = await collect(await domain.send(session, "Capital of France?"))
    answer = second[-1].event
    assert isinstance(answer, Completed) and answer.message.text == "Paris."

    one, two = stub.calls
    assert one["sessionId"] == two["sessionId"] and one["agentId"] == "AGENT12345"
    assert one["inputText"] == "Hi" and "sessionState" not in one  # a first turn: nothing to seed
    assert two["inputText"] == "Capital of France?" and "sessionState" not in two  # Bedrock has the rest
    assert one["streamingConfigurations"] == {"streamFinalResponse": True} and one["enableTrace"] is False

    # Regenerate the second reply: a new branch, so a new Bedrock session seeded with the path.
    stub.answer([chunk("It is Paris.")])
    again = await collect(await domain.regenerate(session, answer.message.id))
    regenerated = again[-1].event
    assert isinstance(regenerated, Completed) and regenerated.message.text == "It is Paris."
    three = stub.calls[2]
    assert three["sessionId"] != one["sessionId"] and three["inputText"] == "Capital of France?"
    assert three["sessionState"]["conversationHistory"]["messages"] == [
        {"role": "user", "content": [{"text": "Hi"}]},
        {"role": "assistant", "content": [{"text": "Hello! How can I help?"}]},
    ]
    # The regenerated branch goes on in its own session, unseeded from now on.
    stub.answer([chunk("About 2 million.")])
    await collect(await domain.send(session, "Its population?"))
    four = stub.calls[3]
    assert four["sessionId"] == three["sessionId"] and "sessionState" not in four

    # Fork main at the first reply and send there (an edit of the second question): another session.
    branches = Branches(domain.sessions, domain.messages, domain.runs)
    fork = await branches.create(session.owner_id, session.id, message_name(session.id, done.message.id), "")
    stub.answer([chunk("Madrid.")])
    await collect(await domain.send(session, "Capital of Spain?", branch=branch_name(session.id, fork.id)))
    five = stub.calls[4]
    assert five["sessionId"] not in {one["sessionId"], three["sessionId"]}
    assert five["inputText"] == "Capital of Spain?"
    assert len(five["sessionState"]["conversationHistory"]["messages"]) == 2
    stub.stubber.assert_no_pending_responses()


async def test_return_control_pauses_for_the_client_tool_and_answers_bedrock(
    agents: tuple[Domain, AgentStub],
) -> None:
    domain, stub = agents
    session = await domain.new_session(model=AGENT, tools=[WEATHER])
    call = {
        "functionInvocationInput": {
            "actionGroup": "WeatherGroup",
            "function": "get_weather",
            "parameters": [{"name": "city", "type": "string", "value": "Paris"}],
        }
    }
    stub.answer([return_control("inv-7", [call])])
    first = await collect(await domain.send(session, "Weather in Paris?"))
    waiting = first[-1].event
    assert isinstance(waiting, ActionRequired)
    (pending,) = waiting.tool_outputs
    assert pending.name == "get_weather" and pending.arguments == '{"city": "Paris"}'

    stub.answer([chunk("Clear skies in Paris.")])
    inputs = ToolInputs({pending.id: ('{"sky": "clear"}', False)}, {})
    rest = await collect(
        await domain.replies.submit(session.owner_id, session.id, waiting.message_id, inputs, deadline=None)
    )
    final = rest[-1].event
    assert isinstance(final, Completed) and final.message.text == "Clear skies in Paris."
    assert final.message.stop_reason is StopReason.END_TURN
    asked, answered = stub.calls
    assert answered["sessionId"] == asked["sessionId"] and "inputText" not in answered
    assert answered["sessionState"] == {
        "invocationId": "inv-7",
        "returnControlInvocationResults": [
            {
                "functionResult": {
                    "actionGroup": "WeatherGroup",
                    "function": "get_weather",
                    "responseBody": {"TEXT": {"body": '{"sky": "clear"}'}},
                }
            }
        ],
    }
    page, _ = await domain.chat.list_messages(session.owner_id, session.id, "", page_request(0, ""))
    assert [m.role for m in page] == [Role.USER, Role.ASSISTANT, Role.TOOL, Role.ASSISTANT]


async def test_return_control_without_the_tool_fails_the_reply_naming_it(
    agents: tuple[Domain, AgentStub],
) -> None:
    domain, stub = agents
    session = await domain.new_session(model=AGENT)  # no tools
    stub.answer(
        [
            return_control(
                "inv-8", [{"functionInvocationInput": {"actionGroup": "G", "function": "get_weather"}}]
            )
        ]
    )
    events = await collect(await domain.send(session, "Weather?"))
    failed = events[-1].event
    assert isinstance(failed, Failed) and isinstance(failed.error, FailedPrecondition)
    assert failed.error.metadata == {
        "provider": "bedrock-agent",
        "agent": "AGENT12345",
        "tool": "get_weather",
    }
    accepted = events[0].event
    assert isinstance(accepted, Accepted)
    stored = await domain.messages.get(session.id, accepted.assistant_message_id)
    assert stored is not None and stored.status is MessageStatus.FAILED
    assert stored.stop_reason is StopReason.ERROR


@pytest.mark.parametrize("tools", [[], [WEATHER]], ids=["reply", "tool-loop"])
async def test_the_stored_reply_keeps_the_citations(
    agents: tuple[Domain, AgentStub], tools: list[ToolSpec]
) -> None:
    """Both run bodies (a plain reply; the tool loop of an agent with tools) store the citations
    of the provider's final event on the reply, where reading the message finds them again."""
    domain, stub = agents
    session = await domain.new_session(model=AGENT, tools=tools)
    stub.answer([chunk("Paris is the capital", [CITED]), chunk(" of France.", [CITED_LATER])])
    events = await collect(await domain.send(session, "Capital of France?"))
    done = events[-1].event
    assert isinstance(done, Completed) and done.message.text == "Paris is the capital of France."
    assert done.message.citations == (STORED_CITATION, STORED_LATER)
    stored = await domain.messages.get(session.id, done.message.id)
    assert stored is not None and stored.citations == (STORED_CITATION, STORED_LATER)
    # What GetMessage / ListMessages send (and Envoy's JSON, in proto3 JSON names).
    assert json_format.MessageToDict(message_to_proto(stored))["citations"] == [
        {
            "text": "Paris is the capital",
            "endIndex": 19,  # start_index 0 is proto3's default: left out of the JSON
            "sources": [
                {
                    "text": "Paris est la capitale de la France. 🗼",
                    "location": "s3://kb/france.txt",
                    "locationType": "S3",
                    "metadata": {"x-amz-bedrock-kb-source-uri": "s3://kb/france.txt", "page": "3"},
                },
                {
                    "text": "France: capital Paris.",
                    "location": "https://example.org/fr",
                    "locationType": "WEB",
                },
            ],
        },
        {"text": "France", "startIndex": 24, "endIndex": 29, "sources": [{"text": "La France."}]},
    ]

    stub.answer([chunk("About 2 million.")])  # a reply without citations stores none
    later = (await collect(await domain.send(session, "Its population?")))[-1].event
    assert isinstance(later, Completed)
    again = await domain.messages.get(session.id, later.message.id)
    assert again is not None and again.citations == ()
    assert len(message_to_proto(again).citations) == 0
