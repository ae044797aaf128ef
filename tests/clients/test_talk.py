"""Live voice from the clients: the SDK's ``ParleyClient.converse`` and ``parley talk --file``
against the suite's live server (Silero VAD, Whisper base, the local model, espeak-ng: all real).
An espeak-ng question is streamed from a WAV file at real-time pace (22.05 kHz, converted to
16 kHz by the SDK); one conversation each, to keep the wall time small."""

from __future__ import annotations

import asyncio
import io
import math
import re
import time
import wave
from pathlib import Path

import av
import numpy as np
import pytest
from parley_client import AudioFormat, ChatEvent, InvalidArgumentError, Message, NotFoundError, ParleyClient
from parley_client.audio import write_wav
from parley_proto.v1.chat_service_pb2 import INPUT_AUDIO_FORMAT_OPUS

from tests.audio.audio_samples import espeak_wav
from tests.clients.conftest import LoggedIn, parley

QUESTION = "What is the capital of France?"
MISSING_SESSION = "sessions/01890a5d-ac96-774b-bcce-b302099a8057"
TRAILING_SILENCE_S = 1.0  # send_wav's default, and parley talk's


@pytest.fixture
def question(tmp_path: Path) -> Path:
    path = tmp_path / "question.wav"
    path.write_bytes(espeak_wav(QUESTION))
    return path


def wav_seconds(path: Path) -> float:
    """Length of a WAV file as the SDK sends it: 16 kHz samples, in whole 20 ms frames."""
    with wave.open(str(path)) as w:
        rate, frames = w.getframerate(), len(w.readframes(1 << 30)) // (w.getsampwidth() * w.getnchannels())
    samples = math.ceil(frames * 16_000 / rate)
    return math.ceil(samples / 320) * 0.02


def decoded_seconds(data: bytes) -> tuple[float, int]:
    """Duration and peak of a WAV file, decoded by FFmpeg (PyAV): any player can play it."""
    samples: list[np.ndarray] = []
    rate = 0
    with av.open(io.BytesIO(data)) as container:
        for frame in container.decode(audio=0):
            rate = frame.sample_rate
            samples.append(frame.to_ndarray().reshape(-1))
    pcm = np.concatenate(samples)
    return pcm.shape[0] / rate, int(np.abs(pcm.astype(np.int32)).max())


def _kind(event: object) -> str:
    kind = str(event.WhichOneof("event"))  # type: ignore[attr-defined]
    chat: ChatEvent = event.chat_event  # type: ignore[attr-defined]
    return f"chat_event.{chat.WhichOneof('event')}" if kind == "chat_event" else kind


async def test_a_spoken_question_gets_a_transcript_reply_text_and_audio(
    logged_in: LoggedIn, question: Path, tmp_path: Path
) -> None:
    client = logged_in.client
    agent = await client.create_agent("Guide", instructions="Answer in one short sentence.")
    session = await client.create_session(agent.name)
    events = []
    audio, rate, spoken_s = bytearray(), 0, 0.0
    sending: dict[str, float] = {}

    async def speak() -> float:
        started = time.monotonic()
        sent = await talk.send_wav(question)
        sending["elapsed"] = time.monotonic() - started
        return sent

    async with client.converse(session.name, language="en") as talk:
        speaking = asyncio.create_task(speak())
        async for event in talk:
            events.append(event)
            chat = event.chat_event
            if chat.HasField("audio_chunk"):
                chunk = chat.audio_chunk
                assert chunk.format == AudioFormat.AUDIO_FORMAT_PCM16  # the SDK's default
                audio.extend(chunk.data)
                rate = chunk.sample_rate_hz
                spoken_s += chunk.duration.ToNanoseconds() / 1e9
            elif chat.HasField("message_completed"):
                sent_s = await speaking
                reply = chat.message_completed.message
                await talk.send_playback(reply.name, len(audio) / 2 / rate)  # all of it was heard
                await talk.close_send()  # the stream ends: this was the last turn
        assert not talk.sending

    kinds = [_kind(e) for e in events]
    assert kinds[:4] == ["speech_started", "speech_stopped", "transcript", "chat_event.message_accepted"]
    assert kinds[-1] == "chat_event.message_completed" and "chat_event.text_delta" in kinds
    heard = events[2].transcript
    assert "capital" in heard.text.lower() and heard.language == "en"
    # Sent as recorded: the whole file and the trailing silence, at real-time pace.
    assert sent_s == pytest.approx(wav_seconds(question) + TRAILING_SILENCE_S, abs=0.001)
    assert sending["elapsed"] >= sent_s - 0.1
    # The reply: text as streamed, stored whole, with its latency.
    text = "".join(e.chat_event.text_delta.text for e in events)
    assert text and text == reply.text
    stored = [m async for m in client.list_messages(session.name)]
    assert [m.role for m in stored] == [Message.ROLE_USER, Message.ROLE_ASSISTANT]
    assert stored[0].text == heard.text
    assert stored[1].name == reply.name and stored[1].text == text
    assert stored[1].status == Message.STATUS_COMPLETE
    assert stored[1].voice_to_voice_latency.ToNanoseconds() > 0
    # The audio decodes: PCM16 with speech in it, as long as the sentences say.
    assert rate > 0 and len(audio) / 2 / rate == pytest.approx(spoken_s, abs=0.2)
    path = tmp_path / "reply.wav"
    write_wav(path, bytes(audio), rate)
    seconds, peak = decoded_seconds(path.read_bytes())
    assert seconds == pytest.approx(spoken_s, abs=0.2) and peak > 1000


async def test_a_session_that_does_not_exist_is_not_found_from_both_sides(logged_in: LoggedIn) -> None:
    async with logged_in.client.converse(MISSING_SESSION) as talk:
        with pytest.raises(NotFoundError) as read:
            async for _ in talk:
                pass
        with pytest.raises(NotFoundError) as written:  # a write to the failed call says why too
            await talk.send_audio(bytes(640))
    for caught in (read, written):
        assert caught.value.reason == "RESOURCE_NOT_FOUND"
        assert caught.value.metadata.get("resource") == MISSING_SESSION


async def test_playback_marks_reach_the_server(logged_in: LoggedIn) -> None:
    """A mark of another session's message is refused by the server, so marks go over the wire;
    a negative one is refused before it is sent."""
    client = logged_in.client
    session = await client.create_session((await client.create_agent("Marks")).name)
    async with client.converse(session.name) as talk:
        with pytest.raises(ValueError, match="negative"):
            await talk.send_playback(f"{session.name}/messages/m", -1.0)
        await talk.send_playback(f"{MISSING_SESSION}/messages/01890a5d-ac96-774b-bcce-b302099a8058", 0.5)
        with pytest.raises(InvalidArgumentError) as caught:
            async for _ in talk:
                pass
    assert caught.value.reason == "INVALID_FIELD"
    assert [v.field for v in caught.value.field_violations] == ["playback.message"]


async def test_an_opus_conversation_does_not_take_wav_frames(logged_in: LoggedIn, question: Path) -> None:
    client: ParleyClient = logged_in.client
    session = await client.create_session((await client.create_agent("Opus")).name)
    async with client.converse(session.name, input_format=INPUT_AUDIO_FORMAT_OPUS) as talk:
        with pytest.raises(ValueError, match="PCM16"):
            await talk.send_wav(question)


# --- parley talk -------------------------------------------------------------------------------


def test_parley_talk_prints_what_was_heard_and_the_reply_and_writes_a_wav(
    cli_env: dict[str, str], registered: str, question: Path, tmp_path: Path
) -> None:
    out = tmp_path / "reply.wav"
    done = parley(cli_env, "talk", "--file", str(question), "--language", "en", "--out", str(out), "-v")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("new session sessions/")
    heard = [line for line in lines if line.startswith("you (spoken, en): ")]
    assert len(heard) == 1 and "capital" in heard[0].lower(), done.stdout
    replies = [line.removeprefix("Assistant> ") for line in lines if line.startswith("Assistant> ")]
    assert len(replies) == 1 and replies[0].strip(), done.stdout
    assert any(re.search(r"voice to voice \d+\.\d\d s\]$", line) for line in lines), done.stdout
    written = re.search(rf"\[reply audio: (\d+\.\d\d) s written to {re.escape(str(out))}\]", done.stdout)
    assert written, done.stdout
    with wave.open(str(out)) as w:
        assert (w.getnchannels(), w.getsampwidth()) == (1, 2) and w.getframerate() > 0
    seconds, peak = decoded_seconds(out.read_bytes())
    assert seconds == pytest.approx(float(written.group(1)), abs=0.01) and peak > 1000


def test_parley_talk_refuses_what_it_cannot_send(
    cli_env: dict[str, str], registered: str, question: Path, tmp_path: Path
) -> None:
    missing = parley(cli_env, "talk", "--file", str(tmp_path / "nope.wav"))
    assert missing.returncode == 2
    assert "cannot read" in missing.stderr and "No such file" in missing.stderr
    text = tmp_path / "notes.wav"
    text.write_text("not a recording")
    not_wav = parley(cli_env, "talk", "--file", str(text))
    assert not_wav.returncode == 2 and "not a PCM WAV file" in not_wav.stderr
    no_session = parley(cli_env, "talk", "--file", str(question), "--session", MISSING_SESSION)
    assert no_session.returncode == 1 and "NOT_FOUND (RESOURCE_NOT_FOUND)" in no_session.stderr


def test_parley_talk_with_no_speech_in_the_file_says_so(
    cli_env: dict[str, str], registered: str, tmp_path: Path
) -> None:
    silence = tmp_path / "silence.wav"
    write_wav(silence, bytes(16_000), 16_000)  # 0.5 s
    done = parley(cli_env, "talk", "--file", str(silence))
    assert done.returncode == 1
    assert "no speech was recognized" in done.stderr
    assert "you (spoken" not in done.stdout
