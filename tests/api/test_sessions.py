"""SessionService over a real channel."""

from __future__ import annotations

import grpc
from google.protobuf import field_mask_pb2
from parley_proto.v1 import chat_service_pb2 as cpb
from parley_proto.v1 import session_service_pb2 as pb

from tests.support.client import UserClient, expect_error


def test_create_starts_on_main(alice: UserClient) -> None:
    agent = alice.create_agent()
    session = alice.create_session(agent.name, title="Plans")
    assert session.agent == agent.name and session.title == "Plans"
    assert session.active_branch == f"{session.name}/branches/main"
    assert alice.stubs.sessions.GetSession(pb.GetSessionRequest(name=session.name)).session == session
    assert alice.messages(session.name) == []


def test_list_newest_first_and_filter_by_agent(alice: UserClient) -> None:
    a1, a2 = alice.create_agent(), alice.create_agent()
    s1 = alice.create_session(a1.name)
    s2 = alice.create_session(a2.name)
    s3 = alice.create_session(a1.name)
    listed = alice.stubs.sessions.ListSessions(pb.ListSessionsRequest()).sessions
    assert [s.name for s in listed] == [s3.name, s2.name, s1.name]
    by_agent = alice.stubs.sessions.ListSessions(pb.ListSessionsRequest(agent=a1.name)).sessions
    assert [s.name for s in by_agent] == [s3.name, s1.name]
    pages, token, seen = 0, "", []
    while True:
        page = alice.stubs.sessions.ListSessions(pb.ListSessionsRequest(page_size=1, page_token=token))
        seen += [s.name for s in page.sessions]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == [s3.name, s2.name, s1.name]
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_RESOURCE_NAME"):
        alice.stubs.sessions.ListSessions(pb.ListSessionsRequest(agent="agents/bogus"))


def test_update_title(alice: UserClient) -> None:
    session = alice.create_session(title="Old")
    updated = alice.stubs.sessions.UpdateSession(
        pb.UpdateSessionRequest(
            session=pb.Session(name=session.name, title="New"),
            update_mask=field_mask_pb2.FieldMask(paths=["title"]),
        )
    ).session
    assert updated.title == "New" and updated.agent == session.agent
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD"):
        alice.stubs.sessions.UpdateSession(
            pb.UpdateSessionRequest(session=pb.Session(name=session.name, title="x" * 201))
        )
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD"):
        alice.stubs.sessions.UpdateSession(
            pb.UpdateSessionRequest(
                session=pb.Session(name=session.name, agent="agents/x"),
                update_mask=field_mask_pb2.FieldMask(paths=["agent"]),
            )
        )
    assert alice.stubs.sessions.GetSession(pb.GetSessionRequest(name=session.name)).session.title == "New"


def test_other_users_session_is_not_found(alice: UserClient, bob: UserClient) -> None:
    session = alice.create_session(title="Private")
    with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
        bob.stubs.sessions.GetSession(pb.GetSessionRequest(name=session.name))
    with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
        bob.stubs.sessions.UpdateSession(
            pb.UpdateSessionRequest(session=pb.Session(name=session.name, title="Mine"))
        )
    with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
        bob.stubs.sessions.DeleteSession(pb.DeleteSessionRequest(name=session.name))
    with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
        bob.stubs.chat.ListMessages(cpb.ListMessagesRequest(parent=session.name))
    assert bob.stubs.sessions.ListSessions(pb.ListSessionsRequest()).sessions == []
    assert alice.stubs.sessions.GetSession(pb.GetSessionRequest(name=session.name)).session == session


def test_create_needs_an_agent(alice: UserClient) -> None:
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "MISSING_FIELD"):
        alice.stubs.sessions.CreateSession(pb.CreateSessionRequest(session=pb.Session(title="no agent")))
    with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
        alice.stubs.sessions.CreateSession(
            pb.CreateSessionRequest(session=pb.Session(agent="agents/01900000-0000-7000-8000-000000000000"))
        )
    assert alice.stubs.sessions.ListSessions(pb.ListSessionsRequest()).sessions == []


def test_delete_removes_messages(alice: UserClient) -> None:
    session = alice.create_session()
    events = alice.send(session.name, "Hi there")
    reply = events[-1].message_completed.message
    alice.stubs.sessions.DeleteSession(pb.DeleteSessionRequest(name=session.name))
    with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
        alice.stubs.chat.GetMessage(cpb.GetMessageRequest(name=reply.name))
    with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
        alice.stubs.sessions.GetSession(pb.GetSessionRequest(name=session.name))
