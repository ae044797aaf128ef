"""ChatService.Converse over a real channel: espeak-ng speech streamed in 20 ms frames at real-time
pace (tests/support/live.py), Silero VAD, Whisper base, the local model and espeak-ng speech out
(all real, nothing mocked). Conversations of three turns with one interruption, in English and
in Arabic, then ListMessages shows exactly what was said and what was heard."""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest
from parley_proto.v1 import chat_service_pb2 as pb
from parley_proto.v1 import common_pb2

from tests.support.client import UserClient, error_info
from tests.support.live import LiveCall, Reply, pcm16_speech

#: A sentence counts as played within this much of its end (domain/live/playback.py).
PLAYED_TOLERANCE_S = 0.08
#: Audio a reply must still have to play when the barge-in starts (s): the VAD needs a few of its
#: 32 ms windows to hear speech begin, and the cut must land before the reply's end.
BARGE_ROOM_S = 1.0


def _config(session: str, **kw: object) -> pb.ConverseConfig:
    return pb.ConverseConfig(session=session, **kw)


def _heard(reply: Reply, played_s: float) -> str:
    """The reply text up to the last sentence whose audio ended within ``played_s``."""
    end, cut, position = 0.0, 0, 0
    for sentence, seconds in reply.sentences:
        end += seconds
        found = reply.text.find(sentence.strip(), position)
        position = found + len(sentence.strip())
        if end > played_s + PLAYED_TOLERANCE_S:
            break
        cut = position
    return reply.text[:cut]


def _conversation(user: UserClient, session: str, turns: list[np.ndarray], **config: object) -> LiveCall:
    """Three turns: the second is spoken over the first reply (after its first sentence was
    played), the third after the second reply was played to its end."""
    call = LiveCall(user.stubs.chat, _config(session, **config))
    call.say(turns[0])
    call.wait(lambda: len(call.replies) == 1 and call.replies[0].completed is not None)
    first = call.replies[0]
    # Speak once the first sentence has been played, while the rest still plays: with at least
    # BARGE_ROOM_S of audio left, so the speech is detected before the reply has been heard whole
    # (else halfway through the reply, which may then cut it before its first sentence ends).
    after_first = first.sentences[0][1] + 0.3
    barge_at = after_first if first.audio_s - after_first >= BARGE_ROOM_S else first.audio_s / 2
    call.wait(lambda: first.played_s(time.monotonic()) >= barge_at)
    call.say(turns[1])
    call.wait(lambda: first.interrupted is not None)
    call.wait(lambda: len(call.replies) == 2 and call.replies[1].completed is not None)
    second = call.replies[1]
    call.wait(lambda: second.played_s(time.monotonic()) >= second.audio_s)
    time.sleep(0.5)  # and a breath
    call.say(turns[2])
    call.wait(lambda: len(call.replies) == 3 and call.replies[2].completed is not None)
    call.hang_up()
    assert call.error is None, call.error
    return call


def _check_stored(user: UserClient, session: str, call: LiveCall, language: str) -> None:
    transcripts = [e.transcript for e in call.events if e.WhichOneof("event") == "transcript"]
    assert len(transcripts) == 3 and all(t.text for t in transcripts)
    stored = user.messages(session)
    assert [m.role for m in stored] == [pb.Message.ROLE_USER, pb.Message.ROLE_ASSISTANT] * 3
    # What was said: each user message is its turn's transcript, in the turn's language.
    assert [m.text for m in stored[0::2]] == [t.text for t in transcripts]
    assert all(m.transcript_language == language for m in stored[0::2])
    assert all(m.audio_duration.ToNanoseconds() > 0.5e9 for m in stored[0::2])
    # What was heard: the interrupted reply ends at the last sentence played, shorter than generated.
    first, second, third = call.replies
    assert first.interrupted is not None
    played_s = first.interrupted.played_duration.ToNanoseconds() / 1e9
    cut = stored[1]
    assert cut.name == first.name
    assert cut.status == pb.Message.STATUS_INCOMPLETE
    assert cut.stop_reason == pb.STOP_REASON_INTERRUPTED
    assert cut.text == _heard(first, played_s) == first.interrupted.message.text
    assert len(cut.text) < len(first.text)
    # The other replies were heard whole.
    for reply, message in ((second, stored[3]), (third, stored[5])):
        assert message.name == reply.name and message.status == pb.Message.STATUS_COMPLETE
        assert message.text == reply.text
        assert message.voice_to_voice_latency.ToNanoseconds() > 0
    # The reply audio decodes: raw PCM16 with speech in it.
    for reply in (second, third):
        samples = np.frombuffer(bytes(reply.audio), dtype=np.int16)
        assert reply.sample_rate_hz > 0 and samples.size / reply.sample_rate_hz == pytest.approx(
            reply.audio_s, abs=0.2
        )
        assert np.abs(samples).max() > 1000


def test_an_english_conversation_with_an_interruption(alice: UserClient) -> None:
    agent = alice.create_agent(
        max_output_tokens=40, instructions="You are a friendly guide. Answer in three short sentences."
    )
    session = alice.create_session(agent.name).name
    turns = [
        pcm16_speech("What is the capital of France?"),
        pcm16_speech("Tell me about the weather there."),
        pcm16_speech("Thank you very much."),
    ]
    call = _conversation(alice, session, turns)
    kinds = call.kinds()
    assert kinds[:3] == ["speech_started", "speech_stopped", "transcript"]
    assert kinds.count("interrupted") == 1
    _check_stored(alice, session, call, "en")
    assert "capital" in call.events[2].transcript.text.lower()


def test_an_arabic_conversation_with_an_interruption(alice: UserClient) -> None:
    """Whisper base needs the hint for espeak-ng's Arabic; the reply is spoken with the Arabic
    voice wherever its text is Arabic."""
    agent = alice.create_agent(
        language="ar", max_output_tokens=40, instructions="أجب بالعربية في ثلاث جمل قصيرة."
    )
    session = alice.create_session(agent.name).name
    turns = [
        pcm16_speech("ما هي عاصمة فرنسا؟", "ar"),
        pcm16_speech("أخبرني عن الطقس هناك.", "ar"),
        pcm16_speech("شكرا جزيلا.", "ar"),
    ]
    call = _conversation(alice, session, turns)
    _check_stored(alice, session, call, "ar")


def test_opus_frames_are_heard(alice: UserClient) -> None:
    import av

    session = alice.create_session(alice.create_agent(max_output_tokens=20).name).name
    speech = pcm16_speech("What is the capital of France?")
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate, encoder.layout, encoder.format = 16_000, "mono", "s16"  # type: ignore[attr-defined]
    packets: list[bytes] = []
    padded = np.concatenate([speech, np.zeros(16_000, dtype=np.int16)])
    for start in range(0, padded.shape[0] - 320, 320):
        frame = av.AudioFrame.from_ndarray(
            padded[start : start + 320].reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = 16_000
        packets.extend(bytes(p) for p in encoder.encode(frame))
    requests = [pb.ConverseRequest(config=_config(session, input_format=pb.INPUT_AUDIO_FORMAT_OPUS))]

    def paced() -> object:
        yield requests[0]
        for packet in packets:
            yield pb.ConverseRequest(audio=packet)
            time.sleep(0.02)

    events = list(alice.stubs.chat.Converse(paced()))
    transcripts = [e.transcript for e in events if e.WhichOneof("event") == "transcript"]
    assert transcripts and "capital" in transcripts[0].text.lower()
    completed = [e for e in events if e.chat_event.WhichOneof("event") == "message_completed"]
    assert completed


# --- bad input: a clear status, and every completed turn kept ---------------------------------


def _error(user: UserClient, requests: list[pb.ConverseRequest]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        list(user.stubs.chat.Converse(iter(requests)))
    return caught.value


@pytest.mark.parametrize(
    ("requests", "code", "reason"),
    [
        (
            [pb.ConverseRequest(audio=bytes(640))],
            grpc.StatusCode.INVALID_ARGUMENT,
            "CONVERSE_CONFIG_REQUIRED",
        ),
        ([pb.ConverseRequest()], grpc.StatusCode.INVALID_ARGUMENT, "CONVERSE_CONFIG_REQUIRED"),
    ],
)
def test_a_stream_must_start_with_a_config(
    alice: UserClient, requests: list[pb.ConverseRequest], code: grpc.StatusCode, reason: str
) -> None:
    error = _error(alice, requests)
    assert error.code() == code and error_info(error).reason == reason


def test_bad_configs_and_frames_are_refused(alice: UserClient) -> None:
    session = alice.create_session().name
    config = pb.ConverseRequest(config=_config(session))
    cases = [
        ([config, config], grpc.StatusCode.INVALID_ARGUMENT, "CONVERSE_CONFIG_REQUIRED"),
        (
            [pb.ConverseRequest(config=_config(session, input_format=99))],
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_FIELD",
        ),
        (
            [pb.ConverseRequest(config=_config(session, output_format=99))],
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_FIELD",
        ),
        (
            [pb.ConverseRequest(config=_config(session, language="fr"))],
            grpc.StatusCode.INVALID_ARGUMENT,
            "UNSUPPORTED_LANGUAGE",
        ),
        (
            [config, pb.ConverseRequest(audio=bytes(32_770))],
            grpc.StatusCode.INVALID_ARGUMENT,
            "AUDIO_FRAME_TOO_LARGE",
        ),
        ([config, pb.ConverseRequest(audio=bytes(641))], grpc.StatusCode.INVALID_ARGUMENT, "CORRUPT_AUDIO"),
        (
            [pb.ConverseRequest(config=_config("sessions/00000000-0000-7000-8000-000000000000"))],
            grpc.StatusCode.NOT_FOUND,
            None,
        ),
    ]
    for requests, code, reason in cases:
        error = _error(alice, requests)
        assert error.code() == code, (requests, error)
        if reason:
            assert error_info(error).reason == reason
    assert alice.messages(session) == []


def test_audio_faster_than_real_time_is_refused_and_completed_turns_stay(alice: UserClient) -> None:
    session = alice.create_session(alice.create_agent(max_output_tokens=20).name).name
    call = LiveCall(alice.stubs.chat, _config(session), marks=False)
    call.say(pcm16_speech("Hello there."))
    call.wait(lambda: bool(call.replies) and call.replies[0].completed is not None)
    # Then a burst: 10 s of audio at once.
    for _ in range(500):
        call._requests.put(pb.ConverseRequest(audio=bytes(640)))
    call.wait(lambda: call.error is not None)
    call.hang_up()
    assert isinstance(call.error, grpc.RpcError)
    assert call.error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(call.error).reason == "AUDIO_TOO_FAST"
    stored = alice.messages(session)
    assert [m.role for m in stored] == [pb.Message.ROLE_USER, pb.Message.ROLE_ASSISTANT]
    assert stored[1].status == pb.Message.STATUS_COMPLETE
    assert stored[1].text == call.replies[0].text


def test_pcm16_is_an_output_format_of_voice_messages(alice: UserClient) -> None:
    """The raw format Converse uses by default also serves SendVoiceMessage."""
    from tests.audio.audio_samples import espeak_wav

    session = alice.create_session(alice.create_agent(max_output_tokens=20).name).name
    events = list(
        alice.stubs.chat.SendVoiceMessage(
            pb.SendVoiceMessageRequest(
                session=session, audio=espeak_wav("Hello there."), output_format=common_pb2.AUDIO_FORMAT_PCM16
            )
        )
    )
    chunks = [e.audio_chunk for e in events if e.WhichOneof("event") == "audio_chunk"]
    assert chunks and {c.format for c in chunks} == {common_pb2.AUDIO_FORMAT_PCM16}
    data = b"".join(c.data for c in chunks)
    assert len(data) % 2 == 0 and np.abs(np.frombuffer(data, dtype=np.int16)).max() > 1000
    assert sum(c.duration.ToNanoseconds() for c in chunks) / 1e9 == pytest.approx(
        len(data) / 2 / chunks[0].sample_rate_hz, abs=0.1
    )
