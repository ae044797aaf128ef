"""BranchService and RegenerateMessage over a real channel: fork, switch, edit, regenerate, delete."""

from __future__ import annotations

import threading

import grpc
import pytest
from parley_proto.v1 import branch_service_pb2 as pb
from parley_proto.v1 import chat_service_pb2 as cpb
from parley_proto.v1 import session_service_pb2 as spb

from tests.support.client import UserClient, expect_error


def _texts(messages: list[cpb.Message]) -> list[str]:
    return [m.text for m in messages]


def _branches(user: UserClient, session: str) -> list[pb.Branch]:
    return list(user.stubs.branches.ListBranches(pb.ListBranchesRequest(parent=session)).branches)


def _fork(user: UserClient, session: str, message: str, display_name: str = "") -> pb.Branch:
    return user.stubs.branches.CreateBranch(
        pb.CreateBranchRequest(parent=session, from_message=message, display_name=display_name)
    ).branch


def _activate(user: UserClient, session: str, branch: str) -> spb.Session:
    return user.stubs.branches.SetActiveBranch(
        pb.SetActiveBranchRequest(session=session, branch=branch)
    ).session


@pytest.fixture
def conversation(alice: UserClient) -> tuple[spb.Session, list[cpb.Message]]:
    """A session with two exchanges on main: u1, a1, u2, a2."""
    agent = alice.create_agent(max_output_tokens=6)
    session = alice.create_session(agent.name)
    alice.send(session.name, "First question")
    alice.send(session.name, "Second question")
    return session, alice.messages(session.name)


def test_new_session_has_main(alice: UserClient) -> None:
    session = alice.create_session()
    [main] = _branches(alice, session.name)
    assert main.name == f"{session.name}/branches/main" and main.active
    assert main.message_count == 0 and main.head == "" and main.fork_point == ""


def test_fork_continue_both_and_switch(
    alice: UserClient, conversation: tuple[spb.Session, list[cpb.Message]]
) -> None:
    session, (u1, a1, u2, a2) = conversation
    fork = _fork(alice, session.name, a1.name, "alternative")
    assert fork.head == a1.name and fork.fork_point == a1.name and fork.message_count == 2
    assert not fork.active and fork.display_name == "alternative"
    # Continue the fork without switching to it.
    events = alice.send(session.name, "A different second question", branch=fork.name)
    assert events[0].message_accepted.branch == fork.name
    assert events[0].message_accepted.user_message.parent == a1.name
    on_fork = alice.messages(session.name, branch=fork.name)
    on_main = alice.messages(session.name)
    assert _texts(on_fork)[:3] == ["First question", a1.text, "A different second question"]
    assert on_main == [u1, a1, u2, a2]
    # Copy-on-write: the shared prefix is the same stored messages, not copies.
    assert [m.name for m in on_fork[:2]] == [u1.name, a1.name]
    # Switch: default reads and sends follow the active branch.
    assert _activate(alice, session.name, fork.name).active_branch == fork.name
    assert alice.messages(session.name) == on_fork
    alice.send(session.name, "Third on the fork")
    assert len(alice.messages(session.name)) == 6
    assert alice.messages(session.name, branch=f"{session.name}/branches/main") == on_main
    # ... and back.
    _activate(alice, session.name, f"{session.name}/branches/main")
    alice.send(session.name, "Third on main")
    assert _texts(alice.messages(session.name))[4] == "Third on main"
    assert _texts(alice.messages(session.name, branch=fork.name))[4] == "Third on the fork"
    listed = {b.name: b for b in _branches(alice, session.name)}
    assert listed[f"{session.name}/branches/main"].active and not listed[fork.name].active
    assert listed[fork.name].message_count == 6 and listed[f"{session.name}/branches/main"].message_count == 6
    assert listed[fork.name].fork_point == a1.name


def test_edit_a_user_message(alice: UserClient, conversation: tuple[spb.Session, list[cpb.Message]]) -> None:
    """Editing u2 is a fork at its parent (a1) plus a send of the new text."""
    session, (u1, a1, u2, _a2) = conversation
    fork = _fork(alice, session.name, u2.parent)
    _activate(alice, session.name, fork.name)
    events = alice.send(session.name, "Second question, rephrased")
    new_user = events[0].message_accepted.user_message
    assert new_user.parent == a1.name and new_user.name != u2.name
    assert _texts(alice.messages(session.name))[:3] == [u1.text, a1.text, "Second question, rephrased"]


def test_edit_the_first_message_with_an_empty_branch(
    alice: UserClient, conversation: tuple[spb.Session, list[cpb.Message]]
) -> None:
    session, messages = conversation
    empty = _fork(alice, session.name, "")
    assert empty.head == "" and empty.message_count == 0
    events = alice.send(session.name, "A new beginning", branch=empty.name)
    assert events[0].message_accepted.user_message.parent == ""
    assert _texts(alice.messages(session.name, branch=empty.name))[0] == "A new beginning"
    assert alice.messages(session.name) == messages


def test_regenerate_makes_a_sibling_on_a_new_active_branch(
    alice: UserClient, conversation: tuple[spb.Session, list[cpb.Message]]
) -> None:
    session, (u1, a1, u2, a2) = conversation
    events = list(alice.stubs.chat.RegenerateMessage(cpb.RegenerateMessageRequest(name=a2.name)))
    assert [e.sequence_number for e in events] == list(range(1, len(events) + 1))
    accepted = events[0].message_accepted
    assert accepted.user_message == u2
    new_reply = events[-1].message_completed.message
    assert new_reply.parent == u2.name and new_reply.name != a2.name
    branch = accepted.branch
    got = alice.stubs.sessions.GetSession(spb.GetSessionRequest(name=session.name)).session
    assert got.active_branch == branch
    assert [m.name for m in alice.messages(session.name)] == [u1.name, a1.name, u2.name, new_reply.name]
    assert alice.messages(session.name, branch=f"{session.name}/branches/main") == [u1, a1, u2, a2]


def test_regenerate_refuses_user_messages_and_strangers(
    alice: UserClient, bob: UserClient, conversation: tuple[spb.Session, list[cpb.Message]]
) -> None:
    session, (u1, _a1, _u2, a2) = conversation
    before = _branches(alice, session.name)
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "NOT_AN_ASSISTANT_MESSAGE"):
        list(alice.stubs.chat.RegenerateMessage(cpb.RegenerateMessageRequest(name=u1.name)))
    with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
        list(bob.stubs.chat.RegenerateMessage(cpb.RegenerateMessageRequest(name=a2.name)))
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_RESOURCE_NAME"):
        list(alice.stubs.chat.RegenerateMessage(cpb.RegenerateMessageRequest(name="sessions/x/messages/y")))
    assert _branches(alice, session.name) == before


def test_delete_rules(alice: UserClient, conversation: tuple[spb.Session, list[cpb.Message]]) -> None:
    session, messages = conversation
    main = f"{session.name}/branches/main"
    with expect_error(grpc.StatusCode.FAILED_PRECONDITION, "ACTIVE_BRANCH"):
        alice.stubs.branches.DeleteBranch(pb.DeleteBranchRequest(name=main))
    fork = _fork(alice, session.name, messages[1].name)
    alice.send(session.name, "Only on the fork", branch=fork.name)
    alice.stubs.branches.DeleteBranch(pb.DeleteBranchRequest(name=fork.name))
    with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
        alice.stubs.branches.GetBranch(pb.GetBranchRequest(name=fork.name))
    with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
        _activate(alice, session.name, fork.name)
    with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
        alice.send(session.name, "Into the void", branch=fork.name)
    assert alice.messages(session.name) == messages
    # The first branch is not special: once another is active, main can go.
    other = _fork(alice, session.name, messages[3].name)
    _activate(alice, session.name, other.name)
    alice.stubs.branches.DeleteBranch(pb.DeleteBranchRequest(name=main))
    with expect_error(grpc.StatusCode.FAILED_PRECONDITION, "ACTIVE_BRANCH"):
        alice.stubs.branches.DeleteBranch(pb.DeleteBranchRequest(name=other.name))
    assert [b.name for b in _branches(alice, session.name)] == [other.name]
    assert alice.messages(session.name) == messages


def test_last_branch_cannot_be_deleted(alice: UserClient) -> None:
    """The last branch of a session is always its active one, so ACTIVE_BRANCH is the reason."""
    session = alice.create_session()
    alice.send(session.name, "hello")
    before = alice.messages(session.name)
    with expect_error(grpc.StatusCode.FAILED_PRECONDITION, "ACTIVE_BRANCH"):
        alice.stubs.branches.DeleteBranch(pb.DeleteBranchRequest(name=f"{session.name}/branches/main"))
    [only] = _branches(alice, session.name)
    assert only.active and only.name == f"{session.name}/branches/main"
    assert alice.messages(session.name) == before


def test_bad_forks_and_switches(
    alice: UserClient, bob: UserClient, conversation: tuple[spb.Session, list[cpb.Message]]
) -> None:
    session, messages = conversation
    other = alice.create_session()
    alice.send(other.name, "elsewhere")
    foreign_message = alice.messages(other.name)[0].name
    before = _branches(alice, session.name)
    with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
        _fork(alice, session.name, foreign_message)
    with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
        _fork(bob, session.name, messages[1].name)
    with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
        _fork(alice, session.name, f"{session.name}/messages/01900000-0000-7000-8000-000000000000")
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_RESOURCE_NAME"):
        _fork(alice, session.name, "messages/1")
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD"):
        _fork(alice, session.name, messages[1].name, "x" * 101)
    with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
        _activate(alice, session.name, f"{session.name}/branches/01900000-0000-7000-8000-000000000000")
    with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
        _activate(alice, session.name, f"{other.name}/branches/main")
    with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
        _activate(bob, session.name, f"{session.name}/branches/main")
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_RESOURCE_NAME"):
        _activate(alice, session.name, "branches/main")
    with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
        bob.stubs.branches.ListBranches(pb.ListBranchesRequest(parent=session.name))
    with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
        bob.stubs.branches.DeleteBranch(pb.DeleteBranchRequest(name=f"{session.name}/branches/main"))
    assert _branches(alice, session.name) == before
    assert alice.messages(session.name) == messages


def test_list_branches_paginates(
    alice: UserClient, conversation: tuple[spb.Session, list[cpb.Message]]
) -> None:
    session, messages = conversation
    made = [_fork(alice, session.name, m.name).name for m in messages]
    seen, token = [], ""
    while True:
        page = alice.stubs.branches.ListBranches(
            pb.ListBranchesRequest(parent=session.name, page_size=2, page_token=token)
        )
        seen += [b.name for b in page.branches]
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"{session.name}/branches/main", *made]


def test_sends_to_different_branches_both_land(
    alice: UserClient, conversation: tuple[spb.Session, list[cpb.Message]]
) -> None:
    session, messages = conversation
    fork = _fork(alice, session.name, messages[1].name)
    results: dict[str, list[cpb.ChatEvent]] = {}

    def run(branch: str) -> None:
        results[branch] = alice.send(session.name, f"to {branch[-4:]}", branch=branch)

    main = f"{session.name}/branches/main"
    threads = [threading.Thread(target=run, args=(b,)) for b in (main, fork.name)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(alice.messages(session.name, branch=main)) == 6
    assert len(alice.messages(session.name, branch=fork.name)) == 4
    assert all(r[-1].WhichOneof("event") == "message_completed" for r in results.values())


def test_deleting_the_session_deletes_its_branches(
    alice: UserClient, conversation: tuple[spb.Session, list[cpb.Message]]
) -> None:
    session, messages = conversation
    fork = _fork(alice, session.name, messages[1].name)
    alice.stubs.sessions.DeleteSession(spb.DeleteSessionRequest(name=session.name))
    with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
        alice.stubs.branches.GetBranch(pb.GetBranchRequest(name=fork.name))
    with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
        alice.stubs.chat.GetMessage(cpb.GetMessageRequest(name=messages[0].name))
