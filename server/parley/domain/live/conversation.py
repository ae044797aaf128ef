"""A live spoken conversation over one stream (ChatService.Converse).

The client streams audio frames as it records them; :class:`Conversation` hears them (voice
activity detection and turn detection: ``parley.domain.live.listener``), turns each finished turn
into a spoken user message and a spoken reply exactly as ``SendVoiceMessage`` does
(``Speech.start_spoken``), and forwards the reply's run events. Three tasks share one output
queue: the reader (frames and playback marks, in order), the turn worker (one turn at a time:
speech-to-text, then the reply's events) and, on barge-in, the interrupter.

Barge-in: speech that begins while a reply is playing (its run goes on, or the client has not
reported all of its audio as played: ``parley.domain.live.playback``) interrupts it. No more of
its events are sent; its run is cancelled (stop reason INTERRUPTED) and the stored reply is cut
to the sentences the listener heard (status INCOMPLETE, stop reason INTERRUPTED), so the next
turn's context is what was heard, not what was generated; then ``Interrupted`` is sent.

Every finished turn is stored when its reply starts. A stream that fails (bad input, the client
leaving) keeps every turn stored so far; a reply still running when the stream ends is cancelled
like any foreground reply whose client left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from parley.audio.decode import WHISPER_SAMPLE_RATE_HZ, DecodedAudio
from parley.audio.encode import OutputFormat
from parley.domain.accounts import Principal
from parley.domain.errors import InvalidArgument
from parley.domain.live.listener import Listener, SpeechBegan, SpeechEnded, SpeechPaused, SpeechResumed
from parley.domain.live.playback import Playback, heard_prefix
from parley.domain.models import Message, MessageStatus, StopReason
from parley.domain.voice import Speech
from parley.runs.events import Accepted, AudioReady, Completed, Failed, Sequenced, TranscriptReady
from parley.runs.manager import RunManager
from parley.storage.messages import MessageStore
from parley.storage.sql.sessions import SendTarget

__all__ = [
    "AudioFrame",
    "Conversation",
    "Heard",
    "LiveEvent",
    "LiveInput",
    "PlaybackMark",
    "ReplyEvent",
    "ReplyInterrupted",
]

log = logging.getLogger(__name__)

#: How long a pause lasts before its turn is transcribed speculatively (s of wall time, which
#: is audio time for a live client). Measured on espeak-ng speech: gaps inside speech are one or
#: two 32 ms windows; a turn's end is a pause of PARLEY_CONVERSE_SILENCE_SECONDS (0.5 s).
SPECULATE_AFTER_S = 0.15


@dataclass(frozen=True, slots=True)
class AudioFrame:
    """One frame of recorded audio, in the stream's input format."""

    data: bytes


@dataclass(frozen=True, slots=True)
class PlaybackMark:
    """The client has played ``played_s`` seconds of reply ``message_id``'s audio."""

    message_id: str
    played_s: float


LiveInput = AudioFrame | PlaybackMark


@dataclass(frozen=True, slots=True)
class Heard:
    """What speech-to-text heard in a turn (``text`` empty: nothing; the turn is dropped)."""

    text: str
    language: str
    duration_s: float


@dataclass(frozen=True, slots=True)
class ReplyEvent:
    """An event of the turn's reply run, as SendVoiceMessage streams it."""

    item: Sequenced


@dataclass(frozen=True, slots=True)
class ReplyInterrupted:
    """The user spoke over a reply: ``message`` as stored (cut), and the playback mark used."""

    message: Message
    played_s: float


LiveEvent = SpeechBegan | SpeechEnded | Heard | ReplyEvent | ReplyInterrupted


Transcribing = asyncio.Task[tuple[TranscriptReady, float]]


@dataclass(slots=True)
class _Turn:
    audio: DecodedAudio
    #: ``time.monotonic()`` when the speech ended (the origin of the voice-to-voice latency).
    speech_ended: float
    #: Its transcription, started at the pause that became its end (None: not started).
    transcribing: Transcribing | None = None


@dataclass(slots=True)
class _Reply:
    run_id: str
    playback: Playback
    interrupted: bool = False


class Conversation:
    """One Converse stream: see the module docstring. Built by ``LiveVoice.open``.

    Args:
        principal: the caller.
        target: the session, agent and branch the turns go to (read once, at the start; each
            send reads the branch head again).
        listener: voice activity and turn detection over the stream's decoded frames.
        language: the hint for every turn (``""``: detect among the server's languages).
        output_format: encoding of the reply audio.
    """

    def __init__(
        self,
        speech: Speech,
        runs: RunManager,
        messages: MessageStore,
        principal: Principal,
        target: SendTarget,
        listener: Listener,
        *,
        language: str,
        output_format: OutputFormat,
    ) -> None:
        self._speech = speech
        self._runs = runs
        self._messages = messages
        self._principal = principal
        self._target = target
        self._listener = listener
        self._language = language
        self._format: OutputFormat = output_format
        self._out: asyncio.Queue[LiveEvent | BaseException | None] = asyncio.Queue()
        self._turns: asyncio.Queue[_Turn | None] = asyncio.Queue()
        self._reply: _Reply | None = None
        self._interrupting: asyncio.Task[None] | None = None
        #: The transcription started at the last pause, and the audio it transcribes.
        self._speculation: tuple[float, Transcribing] | None = None
        self._closed = False

    @property
    def session_id(self) -> str:
        return self._target.session.id

    async def run(self, inputs: AsyncIterator[LiveInput]) -> AsyncIterator[LiveEvent]:
        """The conversation's events until the client closes its side and the last reply has
        been sent. Raises what bad input raises (``InvalidArgument``, ``ResourceExhausted``)."""
        reader = asyncio.create_task(self._read(inputs), name="converse reader")
        worker = asyncio.create_task(self._work(), name="converse turns")
        try:
            while (item := await self._out.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self._closed = True
            speculation = self._speculation[1] if self._speculation else None
            tasks = (reader, worker, self._interrupting, speculation)
            for task in tasks:
                if task is not None and not task.done():
                    task.cancel()
            for task in tasks:
                if task is not None:
                    with contextlib.suppress(BaseException):
                        await task
            self._listener.close()

    # --- reading the client's stream ------------------------------------------------------------

    async def _read(self, inputs: AsyncIterator[LiveInput]) -> None:
        try:
            async for item in inputs:
                if isinstance(item, PlaybackMark):
                    self._mark(item)
                    continue
                for event in await self._listener.hear(item.data):
                    self._heard(event)
            for event in self._listener.finish():
                self._heard(event)
            self._turns.put_nowait(None)  # no more turns: the worker ends after the last reply
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._out.put_nowait(exc)

    def _heard(self, event: SpeechBegan | SpeechEnded | SpeechPaused | SpeechResumed) -> None:
        if isinstance(event, SpeechPaused):
            # Transcribe while the silence timer runs: a turn that ends without resumed speech has
            # exactly this audio, so the wait for the silence hides the transcription.
            self._drop_speculation()
            audio = DecodedAudio(event.audio, WHISPER_SAMPLE_RATE_HZ)
            task = asyncio.create_task(self._transcribe_after_pause(audio), name="converse stt")
            self._speculation = (event.audio_end_s, task)
        elif isinstance(event, SpeechResumed):
            self._drop_speculation()
        elif isinstance(event, SpeechBegan):
            self._out.put_nowait(event)
            self._barge_in()
        else:
            self._out.put_nowait(event)
            ended = time.monotonic() - max(0.0, self._listener.position_s - event.audio_end_s)
            audio = DecodedAudio(event.audio, WHISPER_SAMPLE_RATE_HZ)
            transcribing = None
            # Ended where it paused, with no speech since (a resume drops the speculation).
            if self._speculation is not None and self._speculation[0] == event.audio_end_s:
                transcribing = self._speculation[1]
                self._speculation = None
            self._drop_speculation()
            self._turns.put_nowait(_Turn(audio, ended, transcribing))

    async def _transcribe_after_pause(self, audio: DecodedAudio) -> tuple[TranscriptReady, float]:
        """Transcribe a paused turn once the pause has lasted :data:`SPECULATE_AFTER_S`: speech
        has many short gaps (one or two VAD windows every second or two), and a transcription
        once started runs to its end (Whisper stops between 30 s windows only)."""
        await asyncio.sleep(SPECULATE_AFTER_S)
        return await self._speech.transcribe(audio, self._hint())

    def _drop_speculation(self) -> None:
        if self._speculation is not None:
            self._speculation[1].cancel()
            self._speculation = None

    def _hint(self) -> str:
        return self._language or self._speech.hint(self._target)

    def _mark(self, mark: PlaybackMark) -> None:
        reply = self._reply
        if mark.played_s < 0:
            raise InvalidArgument.field("playback.played_duration", "must not be negative")
        if reply is not None and mark.message_id == reply.run_id:
            reply.playback.mark(mark.played_s)
        # Marks for an earlier reply (sent while it was being interrupted) are stale: ignored.

    def _barge_in(self) -> None:
        reply = self._reply
        if reply is None or reply.interrupted or not reply.playback.playing():
            return
        reply.interrupted = True  # from now on none of its events is sent
        self._interrupting = asyncio.create_task(self._interrupt(reply), name="converse barge-in")

    # --- turns ----------------------------------------------------------------------------------

    async def _work(self) -> None:
        try:
            while (turn := await self._turns.get()) is not None:
                await self._take(turn)
            if self._interrupting is not None:
                await self._interrupting
            self._out.put_nowait(None)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._out.put_nowait(exc)

    async def _take(self, turn: _Turn) -> None:
        """Transcribe one turn and stream its reply (until it ends or is interrupted)."""
        if turn.transcribing is not None:
            transcript, transcription_s = await turn.transcribing
        else:
            transcript, transcription_s = await self._speech.transcribe(turn.audio, self._hint())
        self._out.put_nowait(Heard(transcript.text, transcript.language, transcript.duration_s))
        if not transcript.text:
            return
        if self._interrupting is not None:  # the cut of the last reply is its next turn's context
            await self._interrupting
        # A turn that cannot be answered (quota, a reply limit, a message too long) raises: the
        # conversation ends with that status, and the turns before it stay stored.
        subscription = await self._speech.start_spoken(
            self._principal,
            self._target,
            transcript,
            transcription_s,
            output_format=self._format,
            speech_ended=turn.speech_ended,
        )
        async with contextlib.aclosing(subscription):
            async for item in subscription:
                event = item.event
                if isinstance(event, Accepted):
                    self._reply = _Reply(event.assistant_message_id, Playback(event.assistant_message_id))
                    if self._listener.speaking:  # the user already talks again: barge in at once
                        self._barge_in()
                reply = self._reply
                if reply is not None and reply.interrupted:
                    continue  # drained until the run ends (the interrupter cancelled it)
                if isinstance(event, AudioReady) and reply is not None:
                    reply.playback.sent(event.text, event.duration_s)
                if isinstance(event, Completed | Failed) and reply is not None:
                    reply.playback.finished = True
                self._out.put_nowait(ReplyEvent(item))

    async def _interrupt(self, reply: _Reply) -> None:
        """Stop the reply (if its run goes on) and store it cut to what was heard."""
        played_s = reply.playback.played_s()
        await self._runs.cancel(reply.run_id, StopReason.INTERRUPTED)
        stored = await self._messages.last_of_run(self.session_id, reply.run_id)
        if stored is None:  # the session was deleted meanwhile
            return
        heard = heard_prefix(stored.text, reply.playback.sentences, played_s)
        cut = replace(
            stored,
            text=heard,
            status=MessageStatus.INCOMPLETE,
            stop_reason=StopReason.INTERRUPTED,
            error_message="interrupted by the user",
        )
        finished = stored.status in (MessageStatus.COMPLETE, MessageStatus.INCOMPLETE)
        if finished and not await self._messages.cut_reply(cut):
            log.warning("reply %s could not be cut after a barge-in", reply.run_id)
        self._out.put_nowait(ReplyInterrupted(cut, played_s))
