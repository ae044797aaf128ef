"""Live conversations in process (domain/live): turns, replies, barge-in, what is stored.

A scripted listener stands in for voice activity detection (each frame is a command: ``S``
speech starts, ``E`` the turn ends, anything else is silence) and a scripted speech-to-text
gives each turn's transcript; the model is the scripted provider; speech is real espeak-ng;
storage is real SQLite. The real VAD and decoder are tested in tests/audio, the whole stream
over gRPC in tests/api/test_converse.py.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np
import pytest
from parley.audio.decode import DecodedAudio
from parley.domain.errors import InvalidArgument
from parley.domain.live.conversation import (
    AudioFrame,
    Conversation,
    Heard,
    LiveEvent,
    LiveInput,
    PlaybackMark,
    ReplyEvent,
    ReplyInterrupted,
)
from parley.domain.live.listener import SpeechBegan, SpeechEnded
from parley.domain.live.playback import Playback, heard_prefix
from parley.domain.models import MessageStatus, Role, StopReason
from parley.domain.sessions import MAIN_BRANCH_ID
from parley.domain.voice import Speech, reply_language
from parley.providers.stt.base import Transcription
from parley.providers.tts.espeak import EspeakTextToSpeech
from parley.runs.events import Accepted, AudioReady, Completed

from tests.support.scripted import Domain, Script

pytestmark = pytest.mark.skipif(
    __import__("shutil").which("espeak-ng") is None, reason="espeak-ng is not installed"
)


@dataclass
class ScriptedListener:
    """The Listener interface, driven by command frames (see the module docstring)."""

    position_s: float = 0.0
    speaking: bool = False
    closed: bool = False

    async def hear(self, frame: bytes) -> list[SpeechBegan | SpeechEnded]:
        self.position_s += 0.02
        if frame == b"S":
            self.speaking = True
            return [SpeechBegan(self.position_s)]
        if frame == b"E":
            self.speaking = False
            return [SpeechEnded(self.position_s, np.zeros(16_000, dtype=np.float32))]
        return []

    def finish(self) -> list[SpeechBegan | SpeechEnded]:
        return []

    def close(self) -> None:
        self.closed = True


@dataclass
class ScriptedSpeechToText:
    """Each transcription returns the next text (English)."""

    texts: deque[str] = field(default_factory=deque)
    name: str = "scripted"

    async def transcribe(self, audio: DecodedAudio, *, language: str | None) -> Transcription:
        return Transcription(self.texts.popleft() if self.texts else "", language or "en", audio.duration_s)

    async def aclose(self) -> None:
        return None


class Client:
    """Sends inputs when told to and collects the conversation's events."""

    def __init__(self, conversation: Conversation) -> None:
        self.inputs: asyncio.Queue[LiveInput | None] = asyncio.Queue()
        self.events: list[LiveEvent] = []
        self._arrived = asyncio.Event()
        self._task = asyncio.create_task(self._collect(conversation))

    async def _requests(self) -> AsyncIterator[LiveInput]:
        while (item := await self.inputs.get()) is not None:
            yield item

    async def _collect(self, conversation: Conversation) -> None:
        async for event in conversation.run(self._requests()):
            self.events.append(event)
            self._arrived.set()

    def send(self, *frames: bytes) -> None:
        for frame in frames:
            self.inputs.put_nowait(AudioFrame(frame))

    async def until(self, done: type, count: int = 1, within_s: float = 10.0) -> list[LiveEvent]:
        """Wait until ``count`` events of type ``done`` (or matching reply events) arrived."""

        def seen() -> int:
            return sum(1 for e in self.events if _is(e, done))

        async with asyncio.timeout(within_s):
            while seen() < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.events

    async def close(self) -> None:
        self.inputs.put_nowait(None)
        await asyncio.wait_for(self._task, 10)


def _is(event: LiveEvent, kind: type) -> bool:
    if isinstance(event, ReplyEvent):
        return isinstance(event.item.event, kind)
    return isinstance(event, kind)


def _reply_events(events: list[LiveEvent], kind: type) -> list:
    return [e.item.event for e in events if isinstance(e, ReplyEvent) and isinstance(e.item.event, kind)]


async def _conversation(domain: Domain, stt: ScriptedSpeechToText) -> tuple[Conversation, str]:
    session = await domain.new_session()
    speech = Speech(domain.chat, stt, EspeakTextToSpeech(), max_audio_bytes=1 << 20, max_audio_seconds=60)
    target = await domain.chat.target(session.owner_id, session.id)
    conversation = Conversation(
        speech,
        domain.runs,
        domain.messages,
        domain.principal(session.owner_id),
        target,
        ScriptedListener(),  # type: ignore[arg-type]
        language="",
        output_format="pcm16",
    )
    return conversation, session.id


async def _path(domain: Domain, session_id: str) -> list:
    session = await domain.sessions.get_branch(session_id, MAIN_BRANCH_ID)
    assert session is not None and session.head_id is not None
    return list(await domain.messages.path(session_id, session.head_id, 0, 100))


async def test_a_turn_is_stored_and_answered_with_text_and_speech(domain: Domain) -> None:
    conversation, session_id = await _conversation(domain, ScriptedSpeechToText(deque(["What is the time?"])))
    domain.provider.play(Script(["It is noon.", " Have a good day."]))
    client = Client(conversation)
    client.send(b".", b"S", b".", b"E")
    events = await client.until(Completed)
    kinds = [type(e).__name__ for e in events if not isinstance(e, ReplyEvent)]
    assert kinds[:3] == ["SpeechBegan", "SpeechEnded", "Heard"]
    heard = next(e for e in events if isinstance(e, Heard))
    assert heard.text == "What is the time?" and heard.language == "en"
    audio = _reply_events(events, AudioReady)
    assert audio and all(chunk.format == "pcm16" for chunk in audio)
    assert [c.text for c in audio if c.text] == ["It is noon.", "Have a good day."]
    assert all(c.duration_s > 0 for c in audio if c.text)
    completed = _reply_events(events, Completed)[0]
    assert completed.message.voice_to_voice_latency_s is not None
    assert completed.message.voice_to_voice_latency_s >= completed.message.time_to_first_audio_s > 0
    await client.close()
    user, reply = await _path(domain, session_id)
    assert user.role is Role.USER and user.text == "What is the time?" and user.transcript_language == "en"
    assert reply.status is MessageStatus.COMPLETE and reply.text == "It is noon. Have a good day."
    assert reply.voice_to_voice_latency_s == completed.message.voice_to_voice_latency_s


async def test_speech_over_a_playing_reply_cuts_it_to_the_sentences_played(domain: Domain) -> None:
    stt = ScriptedSpeechToText(deque(["Tell me a story.", "Stop, thanks."]))
    conversation, session_id = await _conversation(domain, stt)
    domain.provider.play(Script(["One sentence here.", " Two sentences here.", " Three at the end."]))
    client = Client(conversation)
    client.send(b"S", b"E")
    events = await client.until(Completed)
    accepted = _reply_events(events, Accepted)[0]
    sentences = [c for c in _reply_events(events, AudioReady) if c.text]
    first_s = sentences[0].duration_s
    # The client played the first sentence and a little of the second, then the user spoke.
    reply_id = accepted.assistant_message_id
    client.inputs.put_nowait(PlaybackMark(reply_id, first_s + 0.2))
    domain.provider.play(Script(["Alright."]))
    client.send(b"S")
    events = await client.until(ReplyInterrupted)
    interrupted = next(e for e in events if isinstance(e, ReplyInterrupted))
    assert interrupted.played_s == pytest.approx(first_s + 0.2)
    assert interrupted.message.text == "One sentence here."
    assert interrupted.message.stop_reason is StopReason.INTERRUPTED
    client.send(b"E")
    await client.until(Completed, 2)
    await client.close()
    path = await _path(domain, session_id)
    assert [m.role for m in path] == [Role.USER, Role.ASSISTANT, Role.USER, Role.ASSISTANT]
    cut = path[1]
    assert cut.id == reply_id and cut.text == "One sentence here."
    assert cut.status is MessageStatus.INCOMPLETE and cut.stop_reason is StopReason.INTERRUPTED
    # The next turn's context is what was heard, not what was generated.
    context = domain.provider.requests[-1].turns
    assert [t.content for t in context if t.role == "assistant"] == ["One sentence here."]


async def test_speech_while_the_reply_is_generated_cancels_its_run(domain: Domain) -> None:
    conversation, session_id = await _conversation(domain, ScriptedSpeechToText(deque(["Go on.", "No."])))
    domain.provider.play(Script(["Once upon a time.", " There was", " a"], hang_at=2))
    client = Client(conversation)
    client.send(b"S", b"E")
    await client.until(AudioReady)
    domain.provider.play(Script(["Fine."]))
    client.send(b"S")
    events = await client.until(ReplyInterrupted)
    interrupted = next(e for e in events if isinstance(e, ReplyInterrupted))
    assert domain.provider.closed_early, "the provider call was not stopped"
    # No playback mark: played is estimated as real time since the first chunk, which is less
    # than the first sentence here, so nothing was heard.
    assert interrupted.message.status is MessageStatus.INCOMPLETE
    assert interrupted.message.text in ("", "Once upon a time.")
    # Nothing of the interrupted reply is sent after the interruption.
    after = events[events.index(interrupted) :]
    assert not [e for e in after if isinstance(e, ReplyEvent)]
    client.send(b"E")
    await client.until(Completed, 1)
    await client.close()
    stored = await domain.messages.get(session_id, interrupted.message.id)
    assert stored is not None and stored.stop_reason is StopReason.INTERRUPTED
    assert stored.text == interrupted.message.text


async def test_a_turn_with_no_speech_recognized_stores_nothing(domain: Domain) -> None:
    conversation, session_id = await _conversation(domain, ScriptedSpeechToText(deque([""])))
    client = Client(conversation)
    client.send(b"S", b"E")
    events = await client.until(Heard)
    await client.close()
    assert next(e for e in events if isinstance(e, Heard)).text == ""
    branch = await domain.sessions.get_branch(session_id, MAIN_BRANCH_ID)
    assert branch is not None and branch.head_id is None


async def test_a_bad_frame_ends_the_stream_and_keeps_the_turns_before_it(domain: Domain) -> None:
    conversation, session_id = await _conversation(domain, ScriptedSpeechToText(deque(["Hello."])))
    domain.provider.play(Script(["Hi."]))
    requests: asyncio.Queue[LiveInput | None] = asyncio.Queue()

    async def inputs() -> AsyncIterator[LiveInput]:
        while (item := await requests.get()) is not None:
            yield item

    for frame in (b"S", b"E"):
        requests.put_nowait(AudioFrame(frame))
    events = []
    with pytest.raises(InvalidArgument):
        async for event in conversation.run(inputs()):
            events.append(event)
            if _is(event, Completed):
                requests.put_nowait(PlaybackMark("x", -1.0))
    assert _reply_events(events, Completed)
    path = await _path(domain, session_id)
    assert [m.text for m in path] == ["Hello.", "Hi."]


def test_heard_prefix_keeps_whole_sentences_within_the_mark() -> None:
    text = "First one. Second one! Third?"
    sentences = [("First one.", 1.0), ("Second one!", 1.0), ("Third?", 0.5)]
    assert heard_prefix(text, sentences, 0.5) == ""
    assert heard_prefix(text, sentences, 1.0) == "First one."
    assert heard_prefix(text, sentences, 1.95) == "First one. Second one!"  # within the tolerance
    assert heard_prefix(text, sentences, 9.0) == text


def test_playback_without_marks_assumes_real_time_and_marks_never_go_back() -> None:
    playback = Playback("m")
    playback.sent("A sentence.", 2.0, now=100.0)
    assert playback.played_s(now=101.0) == pytest.approx(1.0)
    assert playback.played_s(now=105.0) == 2.0  # never more than was sent
    playback.finished = True
    assert playback.playing(now=101.0) and not playback.playing(now=105.0)
    playback.mark(1.5)
    playback.mark(0.5)
    assert playback.played_s(now=200.0) == 1.5


def test_the_reply_voice_follows_the_script_of_each_sentence() -> None:
    assert reply_language("مرحبا بك", "en") == "ar"
    assert reply_language("Hello there", "ar") == "en"
    assert reply_language("Bonjour", "fr") == "fr"
    assert reply_language("42", "ar") == "ar"
    assert reply_language("Hi", "") == "en"
