"""SendVoiceMessage and SynthesizeSpeech over a real channel: espeak-ng speech in, Whisper base,
the local model, espeak-ng speech out (all real, nothing mocked)."""

from __future__ import annotations

import io
import subprocess
from collections.abc import Callable

import av
import grpc
import numpy as np
import pytest
from parley_proto.v1 import chat_service_pb2 as pb
from parley_proto.v1 import common_pb2

from tests.audio.audio_samples import espeak_wav, pcm_file, transcode
from tests.support.client import UserClient, error_info, expect_error, new_user
from tests.support.server import ServerProcess

ENGLISH = "The quick brown fox jumps over the lazy dog."
ARABIC = "مرحبا، كيف حالك اليوم؟"


def _has_arabic(text: str) -> bool:
    return any("\u0600" <= ch <= "\u06ff" for ch in text)


def _kind(event: pb.ChatEvent) -> str:
    return str(event.WhichOneof("event"))


def _decoded_seconds(data: bytes) -> float:
    with av.open(io.BytesIO(data)) as container:
        samples, rate = 0, 1
        for frame in container.decode(audio=0):
            samples += frame.samples
            rate = frame.sample_rate
    return samples / rate


@pytest.fixture(scope="module")
def english_mp3() -> bytes:
    return transcode(espeak_wav(ENGLISH), "mp3", "libmp3lame", 22050)


def _voice(user: UserClient, session: str, audio: bytes, **kw: object) -> list[pb.ChatEvent]:
    return list(
        user.stubs.chat.SendVoiceMessage(pb.SendVoiceMessageRequest(session=session, audio=audio, **kw))
    )


def test_english_voice_round_trip(alice: UserClient, english_mp3: bytes) -> None:
    agent = alice.create_agent(max_output_tokens=80, instructions="Answer in three short sentences.")
    session = alice.create_session(agent.name)
    events = _voice(alice, session.name, english_mp3)
    kinds = [_kind(e) for e in events]
    assert [e.sequence_number for e in events] == list(range(1, len(events) + 1))
    assert kinds[:2] == ["message_accepted", "transcript"] and kinds[-2:] == ["usage", "message_completed"]
    transcript = events[1].transcript
    assert transcript.language == "en"
    assert "fox" in transcript.text.lower() and "dog" in transcript.text.lower()
    assert transcript.audio_duration.ToNanoseconds() > 1e9
    # Audio is interleaved with the text: the first chunk comes before the last delta.
    first_audio = kinds.index("audio_chunk")
    last_delta = len(kinds) - 1 - kinds[::-1].index("text_delta")
    assert first_audio < last_delta
    chunks = [e.audio_chunk for e in events if _kind(e) == "audio_chunk"]
    assert {c.format for c in chunks} == {common_pb2.AUDIO_FORMAT_MP3}
    assert all(c.language == "en" for c in chunks)
    assert _decoded_seconds(b"".join(c.data for c in chunks)) > 0.5
    # The user message is the transcript, with what was heard.
    user_message = events[0].message_accepted.user_message
    assert user_message.text == transcript.text and user_message.transcript_language == "en"
    stored = alice.messages(session.name)
    assert stored[0].audio_duration.ToNanoseconds() > 1e9
    assert stored[1] == events[-1].message_completed.message


def test_arabic_voice_gets_arabic_speech(alice: UserClient) -> None:
    """Whisper base does not recognize espeak-ng's Arabic without a hint; the agent's language is it."""
    agent = alice.create_agent(language="ar", max_output_tokens=30, instructions="أجب بالعربية.")
    session = alice.create_session(agent.name)
    events = _voice(
        alice, session.name, espeak_wav(ARABIC, voice="ar"), output_format=common_pb2.AUDIO_FORMAT_OPUS
    )
    transcript = events[1].transcript
    assert transcript.language == "ar"
    assert any("\u0600" <= ch <= "\u06ff" for ch in transcript.text)
    chunks = [e.audio_chunk for e in events if _kind(e) == "audio_chunk"]
    # Each sentence is spoken with the voice of its script: Arabic text with the Arabic voice (the
    # tiny model sometimes adds an English sentence, spoken with the English voice).
    spoken = [c for c in chunks if c.text]
    assert spoken and all(c.language == ("ar" if _has_arabic(c.text) else "en") for c in spoken)
    assert {c.format for c in chunks} == {common_pb2.AUDIO_FORMAT_OPUS} and chunks[0].sample_rate_hz == 48000
    assert _decoded_seconds(b"".join(c.data for c in chunks)) > 0.2


def test_synthesize_speech_speaks_with_the_language_voice(alice: UserClient) -> None:
    """WAV output is lossless, so it must equal espeak-ng's own Arabic rendering of the text."""
    agent = alice.create_agent(language="ar", max_output_tokens=4)
    session = alice.create_session(agent.name)
    user_message = alice.send(session.name, ARABIC)[0].message_accepted.user_message
    chunks = list(
        alice.stubs.chat.SynthesizeSpeech(
            pb.SynthesizeSpeechRequest(name=user_message.name, format=common_pb2.AUDIO_FORMAT_WAV)
        )
    )
    assert chunks[0].text == ARABIC and chunks[0].segment_index == 0 and chunks[0].language == "ar"
    ours = _pcm(b"".join(c.data for c in chunks))
    espeak = subprocess.run(
        ["espeak-ng", "-v", "ar", "-s", "160", "--stdout", "-b", "1", "--stdin"],
        input=ARABIC.encode(),
        capture_output=True,
        check=True,
    ).stdout
    reference = _pcm(espeak)
    assert len(ours) == len(reference)
    assert np.max(np.abs(ours.astype(np.int32) - reference.astype(np.int32))) <= 1


def _pcm(wav: bytes) -> np.ndarray:
    with av.open(io.BytesIO(wav)) as container:
        return np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])


def test_synthesize_other_users_message(alice: UserClient, bob: UserClient) -> None:
    session = alice.create_session()
    reply = alice.send(session.name, "Hello")[-1].message_completed.message
    with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
        list(bob.stubs.chat.SynthesizeSpeech(pb.SynthesizeSpeechRequest(name=reply.name)))
    mp3 = b"".join(
        c.data for c in alice.stubs.chat.SynthesizeSpeech(pb.SynthesizeSpeechRequest(name=reply.name))
    )
    assert _decoded_seconds(mp3) > 0.1


def _bad_inputs() -> dict[str, tuple[bytes, grpc.StatusCode, str]]:
    wav = espeak_wav(ENGLISH)
    mp3 = transcode(wav, "mp3", "libmp3lame", 22050)
    png = (
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4"
        b"\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82"
    )
    silence = pcm_file(np.zeros((1, 16000 * 3), dtype=np.int16), 16000, "wav", "pcm_s16le")
    return {
        "zero bytes": (b"", grpc.StatusCode.INVALID_ARGUMENT, "EMPTY_AUDIO"),
        "png": (png, grpc.StatusCode.INVALID_ARGUMENT, "UNSUPPORTED_AUDIO"),
        "text": (
            b"Hello, this is not audio at all.\n" * 20,
            grpc.StatusCode.INVALID_ARGUMENT,
            "UNSUPPORTED_AUDIO",
        ),
        "truncated mp3": (mp3[: len(mp3) // 3], grpc.StatusCode.INVALID_ARGUMENT, "CORRUPT_AUDIO"),
        # RIFF/WAVE and then no valid chunk structure: not decodable.
        "wav header with garbage": (
            b"RIFF" + (4000).to_bytes(4, "little") + b"WAVE" + bytes(range(256)) * 16,
            grpc.StatusCode.INVALID_ARGUMENT,
            "CORRUPT_AUDIO",
        ),
        # A complete PCM header whose data is random bytes decodes fine, as noise: no speech.
        "pcm header with noise": (
            wav[:44] + np.random.default_rng(7).integers(0, 256, 40_000, dtype=np.uint8).tobytes(),
            grpc.StatusCode.INVALID_ARGUMENT,
            "EMPTY_TRANSCRIPT",
        ),
        "silence": (silence, grpc.StatusCode.INVALID_ARGUMENT, "EMPTY_TRANSCRIPT"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "zero bytes",
        "png",
        "text",
        "truncated mp3",
        "wav header with garbage",
        "pcm header with noise",
        "silence",
    ],
)
def test_bad_audio_is_refused_and_nothing_stored(alice: UserClient, case: str) -> None:
    cases = _bad_inputs()
    audio, code, reason = cases[case]
    session = alice.create_session()
    alice.send(session.name, "Before")
    before = alice.messages(session.name)
    with expect_error(code, reason) as err:
        _voice(alice, session.name, audio)
    if case in ("png", "text"):
        assert err.error is not None
        info = error_info(err.error)
        assert info is not None
        assert info.metadata["detected_type"].startswith("image/png" if case == "png" else "text/")
    assert alice.messages(session.name) == before


def test_bad_voice_fields(alice: UserClient, bob: UserClient, english_mp3: bytes) -> None:
    session = alice.create_session()
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "UNSUPPORTED_LANGUAGE"):
        _voice(alice, session.name, english_mp3, language="fr")
    with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
        _voice(bob, session.name, english_mp3)
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD"):
        _voice(alice, session.name, english_mp3, output_format=42)
    assert alice.messages(session.name) == []


def test_size_and_duration_caps(server_factory: Callable[..., ServerProcess], english_mp3: bytes) -> None:
    small = server_factory(max_audio_bytes="20000", max_audio_seconds="1.5")
    long_flac = pcm_file(np.zeros((1, 16000 * 60), dtype=np.int16), 16000, "flac", "flac")  # 60 s, a few kB
    assert len(long_flac) < 20000
    with grpc.insecure_channel(small.target) as ch:
        user = new_user(ch)
        session = user.create_session()
        with expect_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "AUDIO_TOO_LARGE"):
            _voice(user, session.name, english_mp3 + bytes(20000))
        with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "AUDIO_TOO_LONG"):
            _voice(user, session.name, long_flac)
        # Beyond the gRPC receive limit (audio limit + 1 MiB) the transport itself refuses.
        with expect_error(grpc.StatusCode.RESOURCE_EXHAUSTED):
            _voice(user, session.name, bytes(20000 + 1024 * 1024 + 1))
        assert user.messages(session.name) == []
