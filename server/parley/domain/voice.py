"""Voice: spoken messages in (sniff → decode → transcribe → chat), spoken replies out.

A spoken reply is streamed sentence by sentence while the text is still being generated: each
complete sentence is synthesized and encoded in a background task, and its audio is sent
between the text deltas that follow (docs/design.md, "Streams"). The first ``audio_chunk``
therefore goes out before the reply text is complete. The speech is part of the reply's run
(:class:`SpokenReply`), so its audio chunks are in the run's event log like its text: a
resumed stream continues the same audio file.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import replace

from parley.audio.decode import DecodedAudio, decode_to_pcm
from parley.audio.encode import AudioEncoder, OutputFormat
from parley.audio.sentences import FIRST_CLAUSE_MIN_CHARS, SentenceSplitter
from parley.audio.sniff import sniff
from parley.domain.accounts import Principal
from parley.domain.chat import ChatEngine
from parley.domain.drafts import Spoken
from parley.domain.errors import FailedPrecondition, InvalidArgument, Reason, ResourceExhausted
from parley.domain.models import Message, StopReason
from parley.providers.stt.base import SpeechToText
from parley.providers.tts.base import TextToSpeech
from parley.runs.events import Accepted, AudioReady, Completed, Delta, RunEvent, TranscriptReady, UsageReport
from parley.runs.manager import RunBody, Subscription
from parley.storage.sql.sessions import SendTarget
from parley.telemetry import genai, metrics

__all__ = ["SPOKEN_LANGUAGES", "Speech", "SpokenReply", "reply_language"]

#: Languages speech may be in by default (``PARLEY_SPEECH_LANGUAGES``): English and Arabic are
#: first-class.
SPOKEN_LANGUAGES = ("en", "ar")
_ARABIC = re.compile(r"[\u0600-\u06ff\u0750-\u077f\u08a0-\u08ff\ufb50-\ufdff\ufe70-\ufeff]")
_LETTER = re.compile(r"[^\W\d_]")


def reply_language(text: str, preferred: str) -> str:
    """Voice language for the sentence ``text``, from its script: Arabic letters → ``ar``; other
    letters → ``preferred`` (the agent's or the turn's language) unless that is Arabic, else
    ``en``; no letters at all (numbers, symbols) → ``preferred`` or ``en``. So an English agent
    answering in Arabic speaks it with the Arabic voice, and the reverse."""
    if _ARABIC.search(text):
        return "ar"
    if _LETTER.search(text) and preferred == "ar":
        return "en"
    return preferred or "en"


class _Speaker:
    """Synthesizes sentences one after another in a background task; one encoder per reply."""

    def __init__(self, tts: TextToSpeech, fmt: OutputFormat, language: str, voice: str | None) -> None:
        self._tts = tts
        self._format: OutputFormat = fmt
        self._language = language
        self._voice = voice
        self._sentences: asyncio.Queue[str | None] = asyncio.Queue()
        self._ready: asyncio.Queue[AudioReady | None] = asyncio.Queue()  # None: no more audio
        #: Set when audio is ready to be sent (cleared by :meth:`ready`).
        self.has_audio = asyncio.Event()
        self._encoder: AudioEncoder | None = None
        self._segments = 0
        self._last_language = language or "en"
        #: Seconds of speech synthesized so far.
        self.seconds = 0.0
        self._task = asyncio.create_task(self._run())

    def say(self, sentence: str) -> None:
        self._sentences.put_nowait(sentence)

    def ready(self) -> list[AudioReady]:
        """Audio finished so far, without waiting."""
        self.has_audio.clear()
        chunks = []
        while not self._ready.empty():
            chunk = self._ready.get_nowait()
            if chunk is None:
                self._ready.put_nowait(None)  # keep the end marker for finish()
                break
            chunks.append(chunk)
        return chunks

    async def finish(self) -> AsyncGenerator[AudioReady, None]:
        """Stop taking sentences; yield the rest of the audio as each piece is ready (the last is
        the encoder's flush). Re-raises a synthesis failure."""
        self._sentences.put_nowait(None)
        while (chunk := await self._ready.get()) is not None:
            yield chunk
        await self._task

    async def cancel(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        if self._encoder is not None:
            self._encoder.close()

    async def _run(self) -> None:
        try:
            while (sentence := await self._sentences.get()) is not None:
                language = reply_language(sentence, self._language)
                with genai.speech_span("text_to_speech", self._tts.name, language):
                    audio = await self._tts.synthesize(sentence, language=language, voice=self._voice)
                self.seconds += len(audio.samples) / audio.sample_rate_hz
                if self._encoder is None:
                    self._encoder = AudioEncoder(self._format, audio.sample_rate_hz)
                data = await asyncio.to_thread(self._encoder.encode, audio.samples)
                self._ready.put_nowait(self._chunk(data, sentence, language, audio.duration_s))
                self.has_audio.set()
            if self._encoder is not None:
                tail = await asyncio.to_thread(self._encoder.flush)
                if tail:
                    self._ready.put_nowait(self._chunk(tail, "", self._last_language))
        finally:
            self._ready.put_nowait(None)

    def _chunk(self, data: bytes, text: str, language: str, duration_s: float = 0.0) -> AudioReady:
        assert self._encoder is not None
        index = self._segments if text else max(0, self._segments - 1)
        if text:
            self._segments += 1
        self._last_language = language
        rate = self._encoder.output_sample_rate_hz
        return AudioReady(data, self._format, rate, index, text, language, round(duration_s, 3))


class SpokenReply:
    """The run body of a voice reply: the text reply's events with its speech interleaved.

    Order: ``Accepted``, ``TranscriptReady``, deltas and audio chunks (sentence by sentence),
    the rest of the audio, ``UsageReport``, ``Completed``. The reply (final, cut short or
    checkpointed) carries the seconds of speech made (``speech_duration_s``) and the seconds
    from the start of :meth:`events` (the run's start) to the first audio chunk
    (``time_to_first_audio_s``; None before it). In a live conversation ``speech_ended`` is the
    ``time.monotonic()`` instant the user's speech ended, and the reply also carries the seconds
    from it to the first audio chunk (``voice_to_voice_latency_s``).
    """

    def __init__(
        self,
        text: RunBody,
        transcript: TranscriptReady,
        tts: TextToSpeech,
        *,
        output_format: OutputFormat,
        language: str,
        voice: str | None,
        speech_ended: float | None = None,
    ) -> None:
        self._text = text
        self._transcript = transcript
        self._speech_ended = speech_ended
        self._voice_to_voice_s: float | None = None
        self._tts = tts
        self._format: OutputFormat = output_format
        self._language = language
        self._voice = voice
        self._speaker: _Speaker | None = None
        self._started = time.monotonic()
        self._first_audio_s: float | None = None

    async def events(self) -> AsyncIterator[RunEvent]:
        self._started = time.monotonic()
        speaker = self._speaker = _Speaker(self._tts, self._format, self._language, self._voice)
        # The first piece may end at a clause: the reply is heard sooner (audio/sentences.py).
        splitter = SentenceSplitter(first_clause_chars=FIRST_CLAUSE_MIN_CHARS)
        usage: UsageReport | None = None
        try:
            async with contextlib.aclosing(self._text.events()) as events:  # type: ignore[type-var]
                async for event in self._with_audio(events, speaker):
                    if isinstance(event, AudioReady):
                        yield self._sent(event)
                    elif isinstance(event, Accepted):
                        yield event
                        yield self._transcript
                    elif isinstance(event, Delta):
                        yield event
                        for sentence in splitter.feed(event.text):
                            speaker.say(sentence)
                    elif isinstance(event, UsageReport):
                        usage = event
                    elif isinstance(event, Completed):
                        rest = splitter.flush()
                        if rest:
                            speaker.say(rest)
                        async for chunk in speaker.finish():
                            yield self._sent(chunk)
                        if usage is not None:
                            yield usage
                        yield Completed(self._spoken(event.message))
                    else:
                        yield event
        finally:
            await speaker.cancel()

    @staticmethod
    async def _with_audio(events: AsyncIterator[RunEvent], speaker: _Speaker) -> AsyncIterator[RunEvent]:
        """The text reply's events, with each sentence's audio as soon as it is ready (between
        deltas, or while the model is silent: a slow model does not hold finished audio back)."""
        upcoming: asyncio.Task[RunEvent | None] | None = None
        try:
            while True:
                if upcoming is None:
                    upcoming = asyncio.ensure_future(anext(events, None))
                audio = asyncio.ensure_future(speaker.has_audio.wait())
                try:
                    await asyncio.wait((upcoming, audio), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    audio.cancel()
                for chunk in speaker.ready():
                    yield chunk
                if upcoming.done():
                    event, upcoming = upcoming.result(), None
                    if event is None:
                        return
                    yield event
        finally:
            if upcoming is not None and not upcoming.done():
                upcoming.cancel()
                with contextlib.suppress(BaseException):
                    await upcoming

    def _sent(self, chunk: AudioReady) -> AudioReady:
        """``chunk``, noting the time to first audio (from the start of the run) at the first, and
        observing it in ``parley_time_to_first_audio_seconds``."""
        if self._first_audio_s is None:
            now = time.monotonic()
            self._first_audio_s = now - self._started
            metrics.TIME_TO_FIRST_AUDIO.labels(self._tts.name).observe(self._first_audio_s)
            if self._speech_ended is not None:
                self._voice_to_voice_s = now - self._speech_ended
                metrics.VOICE_TO_VOICE_LATENCY.labels(self._tts.name).observe(self._voice_to_voice_s)
        return chunk

    def progress(self) -> Message:
        return self._spoken(self._text.progress())

    def spent(self) -> tuple[int, int]:
        return self._text.spent()

    def cut_short(self, reason: StopReason, detail: str) -> Message:
        return self._spoken(self._text.cut_short(reason, detail))

    def _spoken(self, reply: Message) -> Message:
        """``reply`` with the seconds of speech made for it so far, and the time to first audio."""
        seconds = self._speaker.seconds if self._speaker is not None else 0.0
        return replace(
            reply,
            speech_duration_s=round(seconds, 3) if seconds else None,
            time_to_first_audio_s=self._first_audio_s,
            voice_to_voice_latency_s=self._voice_to_voice_s,
        )


class Speech:
    """Voice sends (``SendVoiceMessage``) and spoken messages (``SynthesizeSpeech``).

    Args:
        max_audio_bytes: largest upload (bytes); the default setting is 25 MiB, the OpenAI
            transcription API's limit.
        max_audio_seconds: longest recording (s), enforced while decoding.
        languages: the languages speech may be in (``PARLEY_SPEECH_LANGUAGES``): a hint must be
            one of them (the speech-to-text provider detects only among them).
    """

    def __init__(
        self,
        chat: ChatEngine,
        stt: SpeechToText,
        tts: TextToSpeech,
        *,
        max_audio_bytes: int,
        max_audio_seconds: float,
        languages: tuple[str, ...] = SPOKEN_LANGUAGES,
    ) -> None:
        self._chat = chat
        self._stt = stt
        self._tts = tts
        self._max_bytes = max_audio_bytes
        self._max_seconds = max_audio_seconds
        self.languages = languages

    def validate_language(self, language: str) -> str:
        """``language`` if it is empty (detect) or one of :attr:`languages`, else
        ``InvalidArgument`` (UNSUPPORTED_LANGUAGE)."""
        if language and language not in self.languages:
            allowed = ", ".join(repr(code) for code in self.languages)
            raise InvalidArgument.field(
                "language", f"must be one of {allowed} or empty", reason=Reason.UNSUPPORTED_LANGUAGE
            )
        return language

    async def transcribe(self, audio: DecodedAudio, language: str) -> tuple[TranscriptReady, float]:
        """What was said in ``audio`` (16 kHz mono), with ``language`` as the hint (``""``:
        detect among :attr:`languages`), and the seconds speech-to-text took."""
        with genai.speech_span("speech_to_text", self._stt.name, language) as span:
            span.set_attribute("parley.audio.duration_s", audio.duration_s)
            transcribing = time.monotonic()
            heard = await self._stt.transcribe(audio, language=language or None)
            transcription_s = time.monotonic() - transcribing
        return TranscriptReady(heard.text.strip(), heard.language, audio.duration_s), transcription_s

    async def start_spoken(
        self,
        principal: Principal,
        target: SendTarget,
        transcript: TranscriptReady,
        transcription_s: float,
        *,
        output_format: OutputFormat,
        request_id: str = "",
        background: bool = False,
        deadline: float | None = None,
        speech_ended: float | None = None,
    ) -> Subscription:
        """Store ``transcript`` as a spoken user message and start its spoken reply's run (as
        ``ChatEngine.send_to`` raises). The reply's voice follows each sentence's script
        (:func:`reply_language`), preferring the agent's language, else the one spoken."""
        agent = target.agent

        def spoken(text: RunBody) -> SpokenReply:
            return SpokenReply(
                text,
                transcript,
                self._tts,
                output_format=output_format,
                language=agent.language or transcript.language,
                voice=agent.voice or None,
                speech_ended=speech_ended,
            )

        return await self._chat.send_to(
            principal,
            target,
            self._chat.validate_text(transcript.text),
            request_id=request_id,
            background=background,
            deadline=deadline,
            spoken=Spoken(transcript.language, transcript.duration_s, transcription_s),
            body=spoken,
        )

    async def send_voice(
        self,
        principal: Principal,
        session_id: str,
        audio: bytes,
        *,
        language: str,
        output_format: OutputFormat,
        branch: str = "",
        request_id: str = "",
        background: bool = False,
        deadline: float | None = None,
    ) -> Subscription:
        """Transcribe ``audio``, start the reply's run (text and ``output_format`` audio) and
        subscribe to it.

        Raises (before anything is stored): ``ResourceExhausted`` (AUDIO_TOO_LARGE) over
        ``max_audio_bytes``; ``InvalidArgument`` for empty, unsupported (UNSUPPORTED_AUDIO, naming
        the detected type), corrupt (CORRUPT_AUDIO) or over-long (AUDIO_TOO_LONG) audio, an
        unsupported language hint, or a recording with no recognizable speech (EMPTY_TRANSCRIPT);
        ``NotFound`` for a session or branch that is absent or another user's.
        """
        if not audio:
            raise InvalidArgument.field("audio", "must not be empty", reason=Reason.EMPTY_AUDIO)
        if len(audio) > self._max_bytes:
            raise ResourceExhausted(
                f"audio: {len(audio)} bytes is over the limit of {self._max_bytes} bytes",
                reason=Reason.AUDIO_TOO_LARGE,
                metadata={"limit_bytes": str(self._max_bytes), "size_bytes": str(len(audio))},
            )
        self.validate_language(language)
        self._chat.validate_request_id(request_id)
        target = await self._chat.target(principal.user_id, session_id, branch)
        sniff(audio)  # cheap, and names the detected type when it is not audio
        decoded = await asyncio.to_thread(decode_to_pcm, audio, max_duration_s=self._max_seconds)
        transcript, transcription_s = await self.transcribe(decoded, language or self.hint(target))
        if not transcript.text:
            raise InvalidArgument.field(
                "audio", "no speech was recognized in the recording", reason=Reason.EMPTY_TRANSCRIPT
            )
        return await self.start_spoken(
            principal,
            target,
            transcript,
            transcription_s,
            output_format=output_format,
            request_id=request_id,
            background=background,
            deadline=deadline,
        )

    def hint(self, target: SendTarget) -> str:
        """The language hint a recording without one gets: the agent's language when speech may
        be in it, else ``""`` (detect)."""
        language = target.agent.language.split("-", 1)[0].lower()
        return language if language in self.languages else ""

    async def synthesize(
        self, owner_id: str, session_id: str, message_id: str, *, output_format: OutputFormat, voice: str
    ) -> AsyncGenerator[AudioReady, None]:
        """Speak a stored message, sentence by sentence.

        Raises ``NotFound`` for a message that is absent or another user's and
        ``FailedPrecondition`` (MESSAGE_HAS_NO_TEXT) for a message without text.
        """
        target = await self._chat.target(owner_id, session_id)
        message = await self._chat.get_message(owner_id, session_id, message_id)
        if not message.text.strip():
            raise FailedPrecondition("the message has no text to speak", reason=Reason.MESSAGE_HAS_NO_TEXT)
        agent = target.agent
        speaker = _Speaker(self._tts, output_format, agent.language or "", voice or agent.voice or None)
        splitter = SentenceSplitter()
        try:
            for sentence in splitter.feed(message.text):
                speaker.say(sentence)
            rest = splitter.flush()
            if rest:
                speaker.say(rest)
            async for chunk in speaker.finish():
                yield chunk
        finally:
            await speaker.cancel()
