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

from parley.audio.decode import decode_to_pcm
from parley.audio.encode import AudioEncoder, OutputFormat
from parley.audio.sentences import SentenceSplitter
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
from parley.telemetry import genai, metrics

__all__ = ["SPOKEN_LANGUAGES", "Speech", "SpokenReply", "reply_language"]

#: Languages a voice message may be hinted as (English and Arabic are first-class).
SPOKEN_LANGUAGES = ("", "en", "ar")
_ARABIC = re.compile(r"[\u0600-\u06ff\u0750-\u077f\u08a0-\u08ff\ufb50-\ufdff\ufe70-\ufeff]")


def reply_language(text: str, preferred: str) -> str:
    """Voice language for ``text``: the agent's language if set, else Arabic when the text has
    Arabic letters, else English."""
    if preferred:
        return preferred
    return "ar" if _ARABIC.search(text) else "en"


class _Speaker:
    """Synthesizes sentences one after another in a background task; one encoder per reply."""

    def __init__(self, tts: TextToSpeech, fmt: OutputFormat, language: str, voice: str | None) -> None:
        self._tts = tts
        self._format: OutputFormat = fmt
        self._language = language
        self._voice = voice
        self._sentences: asyncio.Queue[str | None] = asyncio.Queue()
        self._ready: asyncio.Queue[AudioReady | None] = asyncio.Queue()  # None: no more audio
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
                self._ready.put_nowait(self._chunk(data, sentence, language))
            if self._encoder is not None:
                tail = await asyncio.to_thread(self._encoder.flush)
                if tail:
                    self._ready.put_nowait(self._chunk(tail, "", self._last_language))
        finally:
            self._ready.put_nowait(None)

    def _chunk(self, data: bytes, text: str, language: str) -> AudioReady:
        assert self._encoder is not None
        index = self._segments if text else max(0, self._segments - 1)
        if text:
            self._segments += 1
        self._last_language = language
        return AudioReady(data, self._format, self._encoder.output_sample_rate_hz, index, text, language)


class SpokenReply:
    """The run body of a voice reply: the text reply's events with its speech interleaved.

    Order: ``Accepted``, ``TranscriptReady``, deltas and audio chunks (sentence by sentence),
    the rest of the audio, ``UsageReport``, ``Completed``. The reply (final, cut short or
    checkpointed) carries the seconds of speech made (``speech_duration_s``) and the seconds
    from the start of :meth:`events` (the run's start) to the first audio chunk
    (``time_to_first_audio_s``; None before it).
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
    ) -> None:
        self._text = text
        self._transcript = transcript
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
        splitter = SentenceSplitter()
        usage: UsageReport | None = None
        try:
            async with contextlib.aclosing(self._text.events()) as events:  # type: ignore[type-var]
                async for event in events:
                    if isinstance(event, Accepted):
                        yield event
                        yield self._transcript
                    elif isinstance(event, Delta):
                        yield event
                        for sentence in splitter.feed(event.text):
                            speaker.say(sentence)
                        for chunk in speaker.ready():
                            yield self._sent(chunk)
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

    def _sent(self, chunk: AudioReady) -> AudioReady:
        """``chunk``, noting the time to first audio (from the start of the run) at the first, and
        observing it in ``parley_time_to_first_audio_seconds``."""
        if self._first_audio_s is None:
            self._first_audio_s = time.monotonic() - self._started
            metrics.TIME_TO_FIRST_AUDIO.labels(self._tts.name).observe(self._first_audio_s)
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
        )


class Speech:
    """Voice sends (``SendVoiceMessage``) and spoken messages (``SynthesizeSpeech``).

    Args:
        max_audio_bytes: largest upload (bytes); the default setting is 25 MiB, the OpenAI
            transcription API's limit.
        max_audio_seconds: longest recording (s), enforced while decoding.
    """

    def __init__(
        self,
        chat: ChatEngine,
        stt: SpeechToText,
        tts: TextToSpeech,
        *,
        max_audio_bytes: int,
        max_audio_seconds: float,
    ) -> None:
        self._chat = chat
        self._stt = stt
        self._tts = tts
        self._max_bytes = max_audio_bytes
        self._max_seconds = max_audio_seconds

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
        if language not in SPOKEN_LANGUAGES:
            raise InvalidArgument.field(
                "language", "must be 'en', 'ar' or empty", reason=Reason.UNSUPPORTED_LANGUAGE
            )
        self._chat.validate_request_id(request_id)
        target = await self._chat.target(principal.user_id, session_id, branch)
        agent = target.agent
        sniff(audio)  # cheap, and names the detected type when it is not audio
        decoded = await asyncio.to_thread(decode_to_pcm, audio, max_duration_s=self._max_seconds)
        with genai.speech_span("speech_to_text", self._stt.name, language or agent.language) as span:
            span.set_attribute("parley.audio.duration_s", decoded.duration_s)
            transcribing = time.monotonic()
            heard = await self._stt.transcribe(decoded, language=language or agent.language or None)
            transcription_s = time.monotonic() - transcribing
        if not heard.text.strip():
            raise InvalidArgument.field(
                "audio", "no speech was recognized in the recording", reason=Reason.EMPTY_TRANSCRIPT
            )
        transcript = TranscriptReady(heard.text, heard.language, decoded.duration_s)

        def spoken(text: RunBody) -> SpokenReply:
            return SpokenReply(
                text,
                transcript,
                self._tts,
                output_format=output_format,
                language=agent.language or "",
                voice=agent.voice or None,
            )

        return await self._chat.send_to(
            principal,
            target,
            self._chat.validate_text(heard.text),
            request_id=request_id,
            background=background,
            deadline=deadline,
            spoken=Spoken(heard.language, decoded.duration_s, transcription_s),
            body=spoken,
        )

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
