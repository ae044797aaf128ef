"""The latency of a turn on its messages, over a real channel: text replies (the local model) and
voice replies (espeak-ng speech in, Whisper base, espeak-ng speech out). The durations are only
checked to be set and ordered, never against a clock."""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration
from parley_proto.v1 import chat_service_pb2 as pb

from tests.audio.audio_samples import espeak_wav
from tests.support.client import UserClient


def _s(duration: Duration) -> float:
    return duration.ToNanoseconds() / 1e9


def _stored(user: UserClient, session: str, name: str) -> tuple[pb.Message, pb.Message]:
    """Message ``name`` as GetMessage and as ListMessages return it."""
    got = user.stubs.chat.GetMessage(pb.GetMessageRequest(name=name)).message
    listed = next(m for m in user.messages(session) if m.name == name)
    return got, listed


def test_a_text_reply_carries_its_first_token_and_generation_durations(alice: UserClient) -> None:
    session = alice.create_session()
    events = alice.send(session.name, "Say hello.")
    reply = events[-1].message_completed.message
    assert reply.HasField("time_to_first_token") and reply.HasField("generation_duration")
    assert _s(reply.generation_duration) >= _s(reply.time_to_first_token) > 0
    assert not reply.HasField("time_to_first_audio") and not reply.HasField("transcription_duration")
    user_message = events[0].message_accepted.user_message
    assert not user_message.HasField("transcription_duration")
    for stored in _stored(alice, session.name, reply.name):
        assert stored == reply


def test_a_voice_turn_carries_first_audio_and_transcription_durations(alice: UserClient) -> None:
    agent = alice.create_agent(max_output_tokens=40, instructions="Answer in two short sentences.")
    session = alice.create_session(agent.name)
    audio = espeak_wav("What is the capital of France?")
    events = list(
        alice.stubs.chat.SendVoiceMessage(pb.SendVoiceMessageRequest(session=session.name, audio=audio))
    )
    kinds = [e.WhichOneof("event") for e in events]
    assert "audio_chunk" in kinds and kinds[-1] == "message_completed"
    # The transcription is on the user message whose audio it is, from the first event on.
    user_message = events[0].message_accepted.user_message
    assert user_message.HasField("transcription_duration") and _s(user_message.transcription_duration) > 0
    assert not user_message.HasField("generation_duration")
    reply = events[-1].message_completed.message
    for field in ("time_to_first_token", "time_to_first_audio", "generation_duration"):
        assert reply.HasField(field), field
    assert not reply.HasField("transcription_duration")
    # Audio follows the first sentence of text; the run ends after the last audio chunk.
    assert _s(reply.generation_duration) >= _s(reply.time_to_first_audio) > 0
    for stored in _stored(alice, session.name, reply.name):
        assert stored == reply
    for stored in _stored(alice, session.name, user_message.name):
        assert stored.transcription_duration == user_message.transcription_duration
