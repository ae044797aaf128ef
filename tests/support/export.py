"""Test helpers for session export, import and archive: a conversation with three branches and a
voice turn, an export read whole, and exports compared modulo ids and times."""

from __future__ import annotations

import json
from typing import Any

from parley_proto.v1 import branch_service_pb2 as bpb
from parley_proto.v1 import chat_service_pb2 as cpb
from parley_proto.v1 import session_service_pb2 as spb

from tests.audio.audio_samples import espeak_wav
from tests.support.client import UserClient

__all__ = ["build_conversation", "export", "last_reply", "lines", "normalized"]

TIME_FIELDS = {"create_time", "update_time", "exported_at"}


def export(user: UserClient, session: str) -> bytes:
    return b"".join(r.data for r in user.stubs.sessions.ExportSession(spb.ExportSessionRequest(name=session)))


def lines(data: bytes) -> list[dict[str, Any]]:
    assert data.endswith(b"\n")
    return [json.loads(x) for x in data.decode().split("\n")[:-1]]


def normalized(data: bytes) -> list[dict[str, Any]]:
    """The file's lines with ids replaced by their order of first appearance and times and the
    source session dropped: what must survive an import unchanged."""
    parsed = lines(data)
    ids: dict[str, str] = {}
    for obj in parsed:
        if obj["type"] in ("session", "agent", "message") or (
            obj["type"] == "branch" and obj["id"] != "main"
        ):
            ids.setdefault(obj["id"], f"<{obj['type']}-{len(ids)}>")

    def norm(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: norm(v) for k, v in value.items() if k not in TIME_FIELDS and k != "source"}
        if isinstance(value, list):
            return [norm(v) for v in value]
        return ids.get(value, value) if isinstance(value, str) else value

    return [norm(obj) for obj in parsed]


def last_reply(events: list[cpb.ChatEvent]) -> cpb.Message:
    done = [e.message_completed.message for e in events if e.WhichOneof("event") == "message_completed"]
    assert done, events
    return done[-1]


def build_conversation(user: UserClient) -> spb.Session:
    """Three branches (main, a fork, a regenerate's branch, which is active) and a voice turn."""
    agent = user.create_agent(max_output_tokens=16, instructions="Answer in one short sentence.")
    session = user.create_session(agent.name, title="Trip planning — رحلة")
    voice = list(
        user.stubs.chat.SendVoiceMessage(
            cpb.SendVoiceMessageRequest(
                session=session.name, audio=espeak_wav("The quick brown fox jumps over the lazy dog.")
            )
        )
    )
    first_reply = last_reply(voice)
    user.send(session.name, "And of Egypt? مصر")
    fork = user.stubs.branches.CreateBranch(
        bpb.CreateBranchRequest(parent=session.name, from_message=first_reply.name, display_name="fork")
    ).branch
    user.send(session.name, "And of Spain?", branch=fork.name)
    last = user.messages(session.name)[-1]
    list(user.stubs.chat.RegenerateMessage(cpb.RegenerateMessageRequest(name=last.name)))
    return user.stubs.sessions.GetSession(spb.GetSessionRequest(name=session.name)).session
