"""Runs over real channels: a reply is followed, resumed and cancelled from other connections,
finishes in the background, and survives ``kill -9`` of the server up to its last checkpoint.

Everything real: the server process, the local model, Whisper and espeak-ng for the voice case.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import grpc
import pytest
from parley_proto.v1 import chat_service_pb2 as pb

from tests.audio.audio_samples import espeak_wav, transcode
from tests.support.client import UserClient, expect_error, new_user, wait_finished
from tests.support.server import ServerProcess

STORY = "Write long, detailed stories."


def _kind(event: pb.ChatEvent) -> str:
    return str(event.WhichOneof("event"))


def _text(events: list[pb.ChatEvent]) -> str:
    return "".join(e.text_delta.text for e in events if _kind(e) == "text_delta")


def _resume(user: UserClient, name: str, after: int = 0, **kw: object) -> Iterator[pb.ChatEvent]:
    return user.stubs.chat.ResumeStream(pb.ResumeStreamRequest(name=name, starting_after=after), **kw)


def _first(stream: Iterator[pb.ChatEvent], n: int) -> list[pb.ChatEvent]:
    out = []
    for event in stream:
        out.append(event)
        if len(out) == n:
            break
    return out


def _long_session(user: UserClient, tokens: int = 400) -> str:
    agent = user.create_agent(max_output_tokens=tokens, instructions=STORY)
    return user.create_session(agent.name).name


def test_a_background_reply_completes_after_a_disconnect_and_replays_whole(alice: UserClient) -> None:
    session = _long_session(alice, tokens=60)
    call = alice.stubs.chat.SendMessage(
        pb.SendMessageRequest(session=session, text="A story about a lighthouse.", background=True)
    )
    seen = _first(call, 4)
    call.cancel()  # the client goes away
    name = seen[0].message_accepted.assistant_message
    reply = wait_finished(alice, name, timeout=120)
    assert reply.status == pb.Message.STATUS_COMPLETE
    assert reply.stop_reason in (pb.STOP_REASON_END_TURN, pb.STOP_REASON_MAX_OUTPUT_TOKENS)
    replayed = list(_resume(alice, name))
    assert replayed[:4] == seen
    assert [e.sequence_number for e in replayed] == list(range(1, len(replayed) + 1))
    assert _kind(replayed[-1]) == "message_completed" and replayed[-1].message_completed.message == reply
    assert _text(replayed) == reply.text and reply.text.startswith(_text(seen))


def test_resume_after_n_gives_the_events_after_n_while_live(alice: UserClient) -> None:
    session = _long_session(alice, tokens=80)
    call = alice.stubs.chat.SendMessage(pb.SendMessageRequest(session=session, text="A story, please."))
    original = iter(call)
    head = _first(original, 5)
    name = head[0].message_accepted.assistant_message
    from_three = list(_resume(alice, name, 3))  # a second connection joins mid-reply
    rest = list(original)
    everything = head + rest
    assert from_three == everything[3:]
    assert [e.sequence_number for e in from_three] == list(range(4, len(everything) + 1))


def test_two_subscribers_on_two_connections_see_the_same_events(
    alice: UserClient, server_target: str
) -> None:
    session = _long_session(alice, tokens=60)
    call = alice.stubs.chat.SendMessage(pb.SendMessageRequest(session=session, text="Tell me a story."))
    stream = iter(call)
    head = _first(stream, 1)
    with grpc.insecure_channel(server_target) as other:
        phone = UserClient(other, alice.username, alice.password, alice.access_token)
        watched = list(_resume(phone, head[0].message_accepted.assistant_message))
    assert head + list(stream) == watched


def test_cancel_from_another_connection_stops_a_long_reply_within_a_second(
    alice: UserClient, server_target: str
) -> None:
    session = _long_session(alice, tokens=400)
    call = alice.stubs.chat.SendMessage(
        pb.SendMessageRequest(session=session, text="Tell me a very long story about a dragon.")
    )
    stream = iter(call)
    head = _first(stream, 4)
    name = head[0].message_accepted.assistant_message
    with grpc.insecure_channel(server_target) as other:
        phone = UserClient(other, alice.username, alice.password, alice.access_token)
        started = time.monotonic()
        stored = phone.stubs.chat.CancelMessage(pb.CancelMessageRequest(name=name)).message
        took = time.monotonic() - started
    rest = list(stream)  # the first connection's stream ends normally
    assert took < 1.0, f"cancel took {took:.2f} s"
    assert stored.status == pb.Message.STATUS_INCOMPLETE and stored.stop_reason == pb.STOP_REASON_CANCELLED
    assert [_kind(e) for e in rest[-2:]] == ["usage", "message_completed"]
    assert rest[-1].message_completed.message == stored
    assert stored.text == _text(head + rest) and stored.usage.output_tokens < 400
    # Idempotent: a finished reply comes back unchanged.
    assert alice.stubs.chat.CancelMessage(pb.CancelMessageRequest(name=name)).message == stored
    assert alice.stubs.chat.GetMessage(pb.GetMessageRequest(name=name)).message == stored


def test_a_reply_in_progress_is_readable_with_its_checkpointed_text(alice: UserClient) -> None:
    session = _long_session(alice, tokens=300)
    call = alice.stubs.chat.SendMessage(pb.SendMessageRequest(session=session, text="A long story."))
    stream = iter(call)
    head = _first(stream, 30)
    name = head[0].message_accepted.assistant_message
    time.sleep(1.5)  # at least one checkpoint (PARLEY_RUN_CHECKPOINT_SECONDS=1)
    partial = alice.stubs.chat.GetMessage(pb.GetMessageRequest(name=name)).message
    listed = alice.messages(session)
    call.cancel()
    if partial.status == pb.Message.STATUS_IN_PROGRESS:
        assert partial.text.startswith(_text(head)) and partial.usage.output_tokens >= 29
        assert listed[-1].name == name and listed[-1].status in (
            pb.Message.STATUS_IN_PROGRESS,
            pb.Message.STATUS_COMPLETE,
        )
    else:  # the model finished its story early; then it must be whole
        assert partial.status == pb.Message.STATUS_COMPLETE


def test_bad_resume_and_cancel_requests(alice: UserClient, bob: UserClient) -> None:
    session = alice.create_session().name
    events = alice.send(session, "Hi")
    accepted = events[0].message_accepted
    reply, user_message = accepted.assistant_message, accepted.user_message.name
    for call in (
        lambda: list(_resume(bob, reply)),
        lambda: bob.stubs.chat.CancelMessage(pb.CancelMessageRequest(name=reply)),
    ):
        with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
            call()
    for call in (
        lambda: list(_resume(alice, user_message)),
        lambda: alice.stubs.chat.CancelMessage(pb.CancelMessageRequest(name=user_message)),
    ):
        with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "NOT_AN_ASSISTANT_MESSAGE"):
            call()
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD"):
        list(_resume(alice, reply, -1))
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_RESOURCE_NAME"):
        list(_resume(alice, "sessions/nope/messages/nope"))
    # Past the last event of a finished reply: the stream ends at once, with OK.
    assert list(_resume(alice, reply, len(events))) == []
    assert list(_resume(alice, reply, 10_000)) == []
    assert alice.messages(session) == [accepted.user_message, events[-1].message_completed.message]


def test_kill_9_mid_reply_keeps_the_user_message_and_the_checkpointed_reply(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    url = f"sqlite+aiosqlite:///{data / 'parley.db'}"
    settings = {"run_lease_seconds": "2", "run_checkpoint_seconds": "0.5"}
    first = server_factory(data_dir=data, database=url, **settings)
    with grpc.insecure_channel(first.target) as ch:
        user = new_user(ch)
        session = _long_session(user, tokens=400)
        call = user.stubs.chat.SendMessage(pb.SendMessageRequest(session=session, text="A very long story."))
        stream = iter(call)
        head = _first(stream, 40)
        name = head[0].message_accepted.assistant_message
        time.sleep(1.2)  # two checkpoints
        assert first.process is not None
        first.process.kill()  # SIGKILL: no shutdown code runs
        first.process.wait(30)
        seen = _text(head)
    second = server_factory(data_dir=data, database=url, **settings)
    with grpc.insecure_channel(second.target) as ch:
        user.channel = ch
        user.__post_init__()
        reply = wait_finished(user, name, timeout=20)  # swept once the dead server's lease expires
        stored = user.messages(session)
    assert [m.role for m in stored] == [pb.Message.ROLE_USER, pb.Message.ROLE_ASSISTANT]
    assert stored[0].text == "A very long story."
    assert reply.status == pb.Message.STATUS_INCOMPLETE and reply.stop_reason == pb.STOP_REASON_SERVER_LOST
    assert reply.text.startswith(seen) and len(reply.text) >= len(seen)
    assert stored[1] == reply


@pytest.fixture(scope="module")
def question_mp3() -> bytes:
    return transcode(espeak_wav("Tell me about the sea, the waves and the wind."), "mp3", "libmp3lame", 22050)


def test_a_voice_reply_resumed_mid_way_continues_the_same_audio_file(
    alice: UserClient, question_mp3: bytes
) -> None:
    agent = alice.create_agent(max_output_tokens=80, instructions="Answer in four short sentences.")
    session = alice.create_session(agent.name).name
    call = alice.stubs.chat.SendVoiceMessage(
        pb.SendVoiceMessageRequest(session=session, audio=question_mp3, background=True)
    )
    head: list[pb.ChatEvent] = []
    for event in call:
        head.append(event)
        if _kind(event) == "audio_chunk":  # disconnect after the first audio chunk
            break
    call.cancel()
    name = head[0].message_accepted.assistant_message
    rest = list(_resume(alice, name, head[-1].sequence_number))
    assert _kind(rest[-1]) == "message_completed" and rest[0].sequence_number == head[-1].sequence_number + 1
    chunks = [e.audio_chunk.data for e in head + rest if _kind(e) == "audio_chunk"]
    assert len(chunks) >= 2
    joined = b"".join(chunks)
    with av.open(io.BytesIO(joined)) as container:
        decoded = sum(frame.samples for frame in container.decode(audio=0))
    assert decoded > 0
    # The whole file is what a client that never disconnected would have received.
    everything = list(_resume(alice, name))
    assert b"".join(e.audio_chunk.data for e in everything if _kind(e) == "audio_chunk") == joined


def test_a_foreground_reply_is_cancelled_when_its_only_stream_is_closed(alice: UserClient) -> None:
    session = _long_session(alice, tokens=400)
    call = alice.stubs.chat.SendMessage(pb.SendMessageRequest(session=session, text="A long story."))
    head = _first(call, 3)
    call.cancel()
    reply = wait_finished(alice, head[0].message_accepted.assistant_message, timeout=10)
    assert reply.stop_reason == pb.STOP_REASON_CANCELLED and reply.usage.output_tokens < 400


def test_a_foreground_reply_outlives_the_first_stream_while_another_follows(alice: UserClient) -> None:
    session = _long_session(alice, tokens=40)
    call = alice.stubs.chat.SendMessage(pb.SendMessageRequest(session=session, text="A short story."))
    head = _first(call, 2)
    name = head[0].message_accepted.assistant_message
    follower = _resume(alice, name)
    first_follow = _first(follower, 1)
    call.cancel()  # the sender leaves; the follower keeps the run alive
    rest = list(follower)
    assert first_follow == head[:1]
    assert rest[-1].message_completed.message.status == pb.Message.STATUS_COMPLETE


def test_a_send_waiting_for_a_busy_branch_is_not_lost(alice: UserClient) -> None:
    """Two sends to one branch from two threads: the second waits for the first run, then runs."""
    session = _long_session(alice, tokens=30)
    results: dict[str, list[pb.ChatEvent]] = {}

    def send(key: str, text: str) -> None:
        results[key] = alice.send(session, text, background=True)

    one = threading.Thread(target=send, args=("one", "First"))
    one.start()
    time.sleep(0.3)
    two = threading.Thread(target=send, args=("two", "Second"))
    two.start()
    one.join(120)
    two.join(120)
    stored = alice.messages(session)
    assert [m.text for m in stored[::2]] == ["First", "Second"]
    assert stored[2].parent == stored[1].name
