"""ChatService over a real channel against the real local model (SmolLM2-135M via llama.cpp)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable

import grpc
import pytest
from parley_proto.v1 import agent_service_pb2 as apb
from parley_proto.v1 import chat_service_pb2 as pb
from parley_proto.v1 import session_service_pb2 as spb

from tests.support.client import UserClient, expect_error, new_user, wait_finished
from tests.support.server import ServerProcess

ARABIC = "مرحبا! كيف حالك اليوم؟ أريد أن أتعلم البرمجة 🌙"


def _kind(event: pb.ChatEvent) -> str:
    return str(event.WhichOneof("event"))


def test_streamed_reply_event_order(alice: UserClient) -> None:
    session = alice.create_session()
    events = alice.send(session.name, "Say hello.")
    assert [e.sequence_number for e in events] == list(range(1, len(events) + 1))
    kinds = [_kind(e) for e in events]
    assert kinds[0] == "message_accepted" and kinds[-2:] == ["usage", "message_completed"]
    assert set(kinds[1:-2]) == {"text_delta"} and len(kinds) > 4
    accepted = events[0].message_accepted
    assert accepted.user_message.text == "Say hello."
    assert accepted.user_message.role == pb.Message.ROLE_USER
    assert accepted.branch == f"{session.name}/branches/main"
    reply = events[-1].message_completed.message
    assert reply.name == accepted.assistant_message
    assert reply.parent == accepted.user_message.name
    assert reply.text == "".join(e.text_delta.text for e in events if _kind(e) == "text_delta")
    assert reply.role == pb.Message.ROLE_ASSISTANT and reply.status == pb.Message.STATUS_COMPLETE
    assert reply.stop_reason in (pb.STOP_REASON_END_TURN, pb.STOP_REASON_MAX_OUTPUT_TOKENS)
    assert reply.model == "local/smollm2-135m-instruct"
    usage = events[-2].usage
    assert usage.input_tokens > 0 and 0 < usage.output_tokens <= 24
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert reply.usage == usage
    assert reply.time_to_first_token.ToNanoseconds() > 0
    stored = alice.messages(session.name)
    assert [m.name for m in stored] == [accepted.user_message.name, reply.name]
    assert alice.stubs.chat.GetMessage(pb.GetMessageRequest(name=reply.name)).message == reply


def test_max_output_tokens_is_respected(alice: UserClient) -> None:
    agent = alice.create_agent(max_output_tokens=5, instructions="Write very long essays.")
    session = alice.create_session(agent.name)
    reply = alice.send(session.name, "Write an essay about the sea.")[-1].message_completed.message
    assert reply.usage.output_tokens <= 5
    assert reply.stop_reason in (pb.STOP_REASON_MAX_OUTPUT_TOKENS, pb.STOP_REASON_END_TURN)


def test_conversation_continues_with_history(alice: UserClient) -> None:
    session = alice.create_session()
    first = alice.send(session.name, "My name is Layla.")
    second = alice.send(session.name, "What is my name?")
    # The second prompt carries the first exchange: more input tokens than the first.
    assert second[-2].usage.input_tokens > first[-2].usage.input_tokens
    assert second[0].message_accepted.user_message.parent == first[-1].message_completed.message.name
    assert len(alice.messages(session.name)) == 4


def test_arabic_round_trips_intact(alice: UserClient) -> None:
    agent = alice.create_agent(language="ar", instructions="أنت مساعد مفيد. أجب بالعربية.")
    session = alice.create_session(agent.name, title="محادثة")
    events = alice.send(session.name, ARABIC)
    assert events[0].message_accepted.user_message.text == ARABIC
    reply = events[-1].message_completed.message
    # Every delta is whole UTF-8 (protobuf would refuse invalid strings) and they add up.
    assert reply.text == "".join(e.text_delta.text for e in events if _kind(e) == "text_delta")
    assert "\ufffd" not in reply.text
    stored = alice.messages(session.name)
    assert stored[0].text == ARABIC
    assert alice.stubs.sessions.GetSession(spb.GetSessionRequest(name=session.name)).session.title == "محادثة"
    assert alice.stubs.agents.GetAgent(apb.GetAgentRequest(name=agent.name)).agent.instructions.startswith(
        "أنت"
    )


@pytest.mark.parametrize(
    ("text", "reason"),
    [("", "EMPTY_MESSAGE"), ("   \n\t ", "EMPTY_MESSAGE"), ("x" * 32_769, "MESSAGE_TOO_LONG")],
)
def test_bad_text_is_refused_and_nothing_stored(alice: UserClient, text: str, reason: str) -> None:
    session = alice.create_session()
    alice.send(session.name, "Hello")
    before = alice.messages(session.name)
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, reason):
        alice.send(session.name, text)
    assert alice.messages(session.name) == before


def test_text_that_cannot_fit_the_context_window_is_refused_whole(alice: UserClient) -> None:
    """32,768 characters pass the size check, but not a 2,048-token model's window: nothing is stored."""
    session = alice.create_session()
    alice.send(session.name, "Hello")
    before = alice.messages(session.name)
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "CONTEXT_WINDOW_EXCEEDED"):
        alice.send(session.name, "word " * 6553)
    assert alice.messages(session.name) == before


def test_long_history_is_trimmed_to_the_window(alice: UserClient) -> None:
    """Each message takes ~40% of the 2,048-token window, so older ones must be dropped."""
    agent = alice.create_agent(max_output_tokens=8)
    session = alice.create_session(agent.name)
    big = "The quick brown fox jumps over the lazy dog. " * 80  # about 800 tokens
    usages = [alice.send(session.name, big)[-2].usage for _ in range(3)]
    budget = 2048 - 8
    assert all(u.input_tokens <= budget for u in usages)
    # The third prompt cannot hold three copies of the big message: history was trimmed.
    assert usages[2].input_tokens < 3 * usages[0].input_tokens - 100
    assert len(alice.messages(session.name)) == 6


def test_other_users_session_and_bad_names(alice: UserClient, bob: UserClient) -> None:
    session = alice.create_session()
    alice.send(session.name, "Mine")
    before = alice.messages(session.name)
    with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
        bob.send(session.name, "Let me in")
    with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
        bob.stubs.chat.GetMessage(pb.GetMessageRequest(name=before[1].name))
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_RESOURCE_NAME"):
        alice.send("sessions/nope", "Hi")
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_RESOURCE_NAME"):
        alice.stubs.chat.GetMessage(pb.GetMessageRequest(name=f"{session.name}/messages/42"))
    with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
        alice.send(session.name, "Hi", branch=f"{session.name}/branches/01900000-0000-7000-8000-000000000000")
    other = alice.create_session()
    with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
        alice.send(session.name, "Hi", branch=f"{other.name}/branches/main")
    # A message name of one session does not resolve under another.
    with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
        alice.stubs.chat.GetMessage(
            pb.GetMessageRequest(name=before[1].name.replace(session.name, other.name))
        )
    assert alice.messages(session.name) == before


def test_list_messages_pagination(alice: UserClient) -> None:
    agent = alice.create_agent(max_output_tokens=2)
    session = alice.create_session(agent.name)
    for i in range(3):
        alice.send(session.name, f"Message {i}")
    everything = alice.messages(session.name)
    assert len(everything) == 6
    assert [m.role for m in everything] == [pb.Message.ROLE_USER, pb.Message.ROLE_ASSISTANT] * 3
    paged = alice.messages(session.name, page_size=4)
    assert paged == everything
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD"):
        alice.stubs.chat.ListMessages(pb.ListMessagesRequest(parent=session.name, page_size=-5))
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN"):
        alice.stubs.chat.ListMessages(pb.ListMessagesRequest(parent=session.name, page_token="bad"))
    big = alice.stubs.chat.ListMessages(pb.ListMessagesRequest(parent=session.name, page_size=10**9))
    assert list(big.messages) == everything and big.next_page_token == ""


def test_request_id_makes_sends_idempotent(alice: UserClient) -> None:
    session = alice.create_session()
    first = alice.send(session.name, "Once only", request_id="req-1")
    again = alice.send(session.name, "Once only", request_id="req-1")
    assert again[0].message_accepted.user_message == first[0].message_accepted.user_message
    assert again[-1].message_completed.message == first[-1].message_completed.message
    assert [e.sequence_number for e in again] == list(range(1, len(again) + 1))
    assert len(alice.messages(session.name)) == 2
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD"):
        alice.send(session.name, "x", request_id="r" * 129)
    assert len(alice.messages(session.name)) == 2


def test_cancel_stops_generation_and_keeps_the_partial_reply(alice: UserClient) -> None:
    agent = alice.create_agent(max_output_tokens=400, instructions="Write long, detailed stories.")
    session = alice.create_session(agent.name)
    call = alice.stubs.chat.SendMessage(
        pb.SendMessageRequest(session=session.name, text="Tell me a very long story about a dragon.")
    )
    events = []
    for event in call:
        events.append(event)
        if sum(_kind(e) == "text_delta" for e in events) >= 3:
            call.cancel()
            break
    accepted = events[0].message_accepted
    reply = wait_finished(alice, accepted.assistant_message, timeout=10)
    assert reply.status == pb.Message.STATUS_INCOMPLETE
    assert reply.stop_reason == pb.STOP_REASON_CANCELLED
    assert reply.text.startswith("".join(e.text_delta.text for e in events if _kind(e) == "text_delta"))
    assert reply.usage.output_tokens < 400
    stored = alice.messages(session.name)
    assert [m.name for m in stored] == [accepted.user_message.name, reply.name]
    # The session keeps working after a cancel.
    assert (
        alice.send(session.name, "Thanks")[-1].message_completed.message.status == pb.Message.STATUS_COMPLETE
    )


def test_deadline_ends_the_reply_incomplete(alice: UserClient) -> None:
    agent = alice.create_agent(max_output_tokens=400, instructions="Write long, detailed stories.")
    session = alice.create_session(agent.name)
    events = []
    with expect_error(grpc.StatusCode.DEADLINE_EXCEEDED):
        for event in alice.stubs.chat.SendMessage(
            pb.SendMessageRequest(session=session.name, text="Tell me a very long story."), timeout=1.5
        ):
            events.append(event)
    assert events and _kind(events[0]) == "message_accepted"
    reply = wait_finished(alice, events[0].message_accepted.assistant_message, timeout=10)
    assert reply.stop_reason == pb.STOP_REASON_DEADLINE_EXCEEDED
    assert reply.status in (pb.Message.STATUS_INCOMPLETE, pb.Message.STATUS_FAILED)


def test_other_rpcs_answer_while_the_model_generates(alice: UserClient) -> None:
    agent = alice.create_agent(max_output_tokens=150, instructions="Write long, detailed stories.")
    session = alice.create_session(agent.name)
    call = alice.stubs.chat.SendMessage(
        pb.SendMessageRequest(session=session.name, text="A long story, please.")
    )
    stream = iter(call)
    assert _kind(next(stream)) == "message_accepted"
    assert _kind(next(stream)) == "text_delta"  # generation is under way
    # While the model is busy, unary RPCs are served (this call would otherwise queue behind it).
    got = alice.stubs.agents.GetAgent(apb.GetAgentRequest(name=agent.name), timeout=5).agent
    assert got.name == agent.name
    rest = list(stream)
    assert _kind(rest[-1]) == "message_completed"


def test_concurrent_sends_to_different_sessions_all_complete(alice: UserClient) -> None:
    sessions = [alice.create_session() for _ in range(3)]
    results: dict[str, list[pb.ChatEvent]] = {}

    def run(name: str) -> None:
        results[name] = alice.send(name, "Say something short.")

    threads = [threading.Thread(target=run, args=(s.name,)) for s in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for s in sessions:
        events = results[s.name]
        assert _kind(events[-1]) == "message_completed"
        assert events[-1].message_completed.message.status == pb.Message.STATUS_COMPLETE


def test_concurrent_sends_to_one_branch_are_serialized(alice: UserClient) -> None:
    session = alice.create_session()
    results: list[list[pb.ChatEvent]] = []

    def run(i: int) -> None:
        results.append(alice.send(session.name, f"Message number {i}"))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    stored = alice.messages(session.name)
    assert len(stored) == 6
    # One linear path: each message's parent is the one before it, user and assistant alternating.
    assert [m.role for m in stored] == [pb.Message.ROLE_USER, pb.Message.ROLE_ASSISTANT] * 3
    for parent, child in itertools.pairwise(stored):
        assert child.parent == parent.name


def test_malformed_request_bytes_are_invalid_argument(server_target: str) -> None:
    with grpc.insecure_channel(server_target) as ch:
        raw = ch.unary_unary(
            "/parley.v1.AuthService/CreateUser", request_serializer=None, response_deserializer=None
        )
        with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_REQUEST"):
            raw(b"\x0a\xff\xff\xff\xff\x0f")  # field 1, length far beyond the message


def test_wrong_wire_type_leaves_text_empty(alice: UserClient, server_target: str) -> None:
    """Field 2 (text) sent as a varint is an unknown field to protobuf: the text is empty."""
    session = alice.create_session()
    name = session.name.encode()
    payload = b"\x0a" + bytes([len(name)]) + name + b"\x10\x05"
    with grpc.insecure_channel(server_target) as ch:
        raw = ch.unary_stream(
            "/parley.v1.ChatService/SendMessage", request_serializer=None, response_deserializer=None
        )
        with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "EMPTY_MESSAGE"):
            list(raw(payload, metadata=[("authorization", f"Bearer {alice.access_token}")]))
    assert alice.messages(session.name) == []


def test_per_user_concurrent_reply_limit(server_factory: Callable[..., ServerProcess]) -> None:
    limited = server_factory(max_concurrent_replies_per_user="1")
    with grpc.insecure_channel(limited.target) as ch:
        user = new_user(ch)
        other = new_user(ch)
        agent = user.create_agent(max_output_tokens=300, instructions="Write long, detailed stories.")
        busy, idle = user.create_session(agent.name), user.create_session(agent.name)
        call = user.stubs.chat.SendMessage(pb.SendMessageRequest(session=busy.name, text="A long story."))
        stream = iter(call)
        assert _kind(next(stream)) == "message_accepted"
        with expect_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_CONCURRENT_REPLIES"):
            user.send(idle.name, "Me too")
        assert user.messages(idle.name) == []
        # The limit is per user: someone else is served meanwhile.
        other_session = other.create_session()
        assert _kind(other.send(other_session.name, "Hi")[-1]) == "message_completed"
        call.cancel()
