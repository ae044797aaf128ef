"""ExportSession and ImportSession over a real channel: a session with three branches and a voice
turn (espeak-ng speech in, Whisper, the local model) is exported, imported into another
account, and exported again; the two files are equal but for ids and times."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from parley_proto.v1 import agent_service_pb2 as apb
from parley_proto.v1 import chat_service_pb2 as cpb
from parley_proto.v1 import session_service_pb2 as spb

from tests.support.client import UserClient, error_info, new_user
from tests.support.export import build_conversation, export, last_reply, lines, normalized
from tests.support.server import ServerProcess


@pytest.fixture(scope="module")
def owner(channel: grpc.Channel) -> UserClient:
    return new_user(channel, prefix="exporter")


@pytest.fixture(scope="module")
def conversation(owner: UserClient) -> spb.Session:
    return build_conversation(owner)


def test_export_is_versioned_json_lines(owner: UserClient, conversation: spb.Session) -> None:
    data = export(owner, conversation.name)
    parsed = lines(data)
    assert parsed[0]["type"] == "parley.export" and parsed[0]["version"] == 1
    assert parsed[0]["source"] == conversation.name
    assert [p["type"] for p in parsed[1:3]] == ["session", "agent"]
    branches = [p for p in parsed if p["type"] == "branch"]
    messages = [p for p in parsed if p["type"] == "message"]
    assert len(branches) == 3 and parsed[-1] == {"type": "end", "branches": 3, "messages": len(messages)}
    assert parsed[1]["active_branch"] == conversation.active_branch.rsplit("/", 1)[1]
    # Creation order: every parent comes before its children.
    seen: set[str] = set()
    for m in messages:
        assert m["parent"] is None or m["parent"] in seen
        seen.add(m["id"])
    voice = messages[0]
    assert voice["role"] == "user" and voice["transcript_language"] == "en" and voice["audio_duration_s"] > 1
    assert "fox" in voice["text"].lower()
    replies = [m for m in messages if m["role"] == "assistant"]
    assert all(m["output_tokens"] > 0 and m["model"] for m in replies)
    assert replies[0]["speech_duration_s"] > 0  # the voice turn's spoken reply
    # The text of every message, byte for byte what ListMessages says.
    listed = {m.name.rsplit("/", 1)[1]: m.text for m in owner.messages(conversation.name)}
    assert all(m["text"] == listed[m["id"]] for m in messages if m["id"] in listed)
    # A second export is the same file but for the export time.
    assert normalized(export(owner, conversation.name)) == normalized(data)


def test_import_into_another_account_round_trips(
    owner: UserClient, conversation: spb.Session, channel: grpc.Channel
) -> None:
    original = export(owner, conversation.name)
    other = new_user(channel, prefix="importer")
    imported = other.stubs.sessions.ImportSession(spb.ImportSessionRequest(data=original)).session
    assert imported.name != conversation.name and imported.agent != conversation.agent
    assert imported.title == conversation.title
    again = export(other, imported.name)
    assert normalized(again) == normalized(original)
    # Same active branch, same path, byte-identical text; the new agent belongs to the importer.
    assert imported.active_branch.rsplit("/", 1)[1] == lines(again)[1]["active_branch"]
    assert [m.text for m in other.messages(imported.name)] == [
        m.text for m in owner.messages(conversation.name)
    ]
    copy = other.stubs.agents.GetAgent(apb.GetAgentRequest(name=imported.agent)).agent
    assert copy.instructions == "Answer in one short sentence." and copy.max_output_tokens == 16
    # The importer can go on talking in the imported session.
    assert last_reply(other.send(imported.name, "Thanks!")).status == cpb.Message.STATUS_COMPLETE
    # The owner still cannot see it, and the importer cannot export the original.
    with pytest.raises(grpc.RpcError) as caught:
        export(other, conversation.name)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_import_attaches_to_a_given_agent(owner: UserClient, conversation: spb.Session) -> None:
    agent = owner.create_agent(display_name="Other agent")
    imported = owner.stubs.sessions.ImportSession(
        spb.ImportSessionRequest(data=export(owner, conversation.name), agent=agent.name)
    ).session
    assert imported.agent == agent.name


def _stored(user: UserClient) -> tuple[list[str], list[str]]:
    sessions = user.stubs.sessions.ListSessions(spb.ListSessionsRequest(page_size=1000)).sessions
    agents = user.stubs.agents.ListAgents(apb.ListAgentsRequest(page_size=1000)).agents
    return sorted(s.name for s in sessions), sorted(a.name for a in agents)


def _edit(data: bytes, number: int, change: Callable[[dict[str, Any]], Any]) -> bytes:
    parsed = data.decode().split("\n")
    obj = json.loads(parsed[number - 1])
    result = change(obj)
    parsed[number - 1] = result if isinstance(result, str) else json.dumps(obj)
    return "\n".join(parsed).encode()


def _first_message_line(data: bytes) -> int:
    return next(i for i, p in enumerate(lines(data), start=1) if p["type"] == "message")


BAD_FILES: dict[str, tuple[Callable[[bytes], bytes], int | None]] = {
    "not json": (lambda d: _edit(d, 3, lambda o: "{not json"), 3),
    "wrong version": (lambda d: _edit(d, 1, lambda o: o.update(version=2)), 1),
    "not an export": (lambda d: b'{"hello": "world"}\n', 1),
    "missing field": (lambda d: _edit(d, 2, lambda o: o.pop("title")), 2),
    "unknown role": (lambda d: _edit(d, _first_message_line(d), lambda o: o.update(role="robot")), None),
    "missing parent": (
        lambda d: _edit(d, _first_message_line(d) + 1, lambda o: o.update(parent="nope")),
        None,
    ),
    "truncated": (lambda d: b"\n".join(d.split(b"\n")[:-2]) + b"\n", None),
    "not utf-8": (lambda d: d.replace(b'"type":"agent"', b'"type":"\xff"', 1), 3),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_are_invalid_argument_naming_the_line_and_store_nothing(
    owner: UserClient, conversation: spb.Session, channel: grpc.Channel, case: str
) -> None:
    original = export(owner, conversation.name)
    make, expected_line = BAD_FILES[case]
    data = make(original)
    other = new_user(channel, prefix="badimport")
    other.create_agent()
    before = _stored(other)
    with pytest.raises(grpc.RpcError) as caught:
        other.stubs.sessions.ImportSession(spb.ImportSessionRequest(data=data))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(caught.value)
    assert info is not None and info.reason == "INVALID_EXPORT"
    line_number = int(info.metadata["line"])
    assert caught.value.details().startswith(f"line {line_number}: ")
    if expected_line is not None:
        assert line_number == expected_line
    elif case == "unknown role":
        assert line_number == _first_message_line(original)
    elif case == "missing parent":
        assert line_number == _first_message_line(original) + 1
    assert _stored(other) == before
    assert normalized(export(owner, conversation.name)) == normalized(original)


def test_import_checks_agent_and_size(
    owner: UserClient, conversation: spb.Session, server_factory: Callable[..., ServerProcess]
) -> None:
    data = export(owner, conversation.name)
    before = _stored(owner)
    with pytest.raises(grpc.RpcError) as caught:
        owner.stubs.sessions.ImportSession(spb.ImportSessionRequest(data=data, agent="agents/not-an-id"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as caught:
        owner.stubs.sessions.ImportSession(spb.ImportSessionRequest())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _stored(owner) == before

    small = server_factory(import_max_bytes=str(len(data) - 1))
    with grpc.insecure_channel(small.target) as ch:
        user = new_user(ch, prefix="small")
        before = _stored(user)
        with pytest.raises(grpc.RpcError) as caught:
            user.stubs.sessions.ImportSession(spb.ImportSessionRequest(data=data))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        info = error_info(caught.value)
        assert info is not None and info.reason == "EXPORT_TOO_LARGE"
        assert _stored(user) == before


def test_strangers_cannot_export(conversation: spb.Session, channel: grpc.Channel) -> None:
    stranger = new_user(channel, prefix="stranger")
    with pytest.raises(grpc.RpcError) as caught:
        export(stranger, conversation.name)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
