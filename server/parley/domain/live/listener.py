"""Hearing a live stream: frames in, speech starts, pauses and finished turns out.

One :class:`Listener` per Converse stream checks each frame (size, pace), decodes it to 16 kHz
mono (``parley.audio.frames``) and runs voice activity detection (``parley.audio.vad``: Silero VAD
probabilities into the turn detector of ``parley.audio.turns``: end of turn after the silence
setting, a longest turn). A pause (the first silent window after speech) comes with the turn's
audio so far, so the conversation can transcribe it while the silence timer runs; the turn that
ends without a resumed speech has exactly that audio.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from parley.audio import turns
from parley.audio.decode import WHISPER_SAMPLE_RATE_HZ
from parley.audio.frames import FrameDecoder, InputFormat
from parley.audio.vad import VoiceActivity
from parley.domain.errors import InvalidArgument, Reason
from parley.domain.live.pacing import Pacer

__all__ = [
    "Heard",
    "Listener",
    "ListenerSettings",
    "SpeechBegan",
    "SpeechEnded",
    "SpeechPaused",
    "SpeechResumed",
]


@dataclass(frozen=True, slots=True)
class ListenerSettings:
    """Limits and turn detection of a stream (the ``PARLEY_CONVERSE_*`` settings).

    Attributes:
        max_frame_bytes: largest frame (bytes).
        max_speed: most seconds of audio per second of wall time.
        burst_s: audio allowed ahead of that pace (s).
        turns: the turn detector's settings (threshold, silence, longest turn ...).
    """

    max_frame_bytes: int = 32_768
    max_speed: float = 2.0
    burst_s: float = 2.0
    turns: turns.TurnSettings = field(default_factory=turns.TurnSettings)


@dataclass(frozen=True, slots=True)
class SpeechBegan:
    """Speech began ``audio_start_s`` seconds into the stream's audio."""

    audio_start_s: float


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    """A turn ended: its speech ended ``audio_end_s`` seconds into the stream's audio;
    ``audio`` is the turn (16 kHz mono float32, with the detector's padding); ``cut``: it
    reached the longest turn rather than a silence."""

    audio_end_s: float
    audio: npt.NDArray[np.float32]
    cut: bool = False


@dataclass(frozen=True, slots=True, eq=False)
class SpeechPaused:
    """Speech stopped for now at ``audio_end_s``; ``audio`` is the turn so far. Unless
    :class:`SpeechResumed` follows, the turn ends with exactly this audio."""

    audio_end_s: float
    audio: npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class SpeechResumed:
    """Speech came back before the turn ended: the last pause is void."""


Heard = SpeechBegan | SpeechEnded | SpeechPaused | SpeechResumed


class Listener:
    """See the module docstring. ``hear`` raises ``InvalidArgument`` (AUDIO_FRAME_TOO_LARGE,
    CORRUPT_AUDIO) and ``ResourceExhausted`` (AUDIO_TOO_FAST); nothing is kept of a bad frame."""

    def __init__(self, input_format: InputFormat, settings: ListenerSettings) -> None:
        self._settings = settings
        self._decoder = FrameDecoder(input_format)
        self._activity = VoiceActivity(settings.turns)
        self._pacer = Pacer(settings.max_speed, settings.burst_s)
        self._samples = 0
        #: Whether the detector is inside speech (a turn has begun and not ended).
        self.speaking = False

    @property
    def position_s(self) -> float:
        """Seconds of audio heard so far."""
        return self._samples / WHISPER_SAMPLE_RATE_HZ

    async def hear(self, frame: bytes) -> list[Heard]:
        """Take one frame; the speech starts and turn ends it completes."""
        if len(frame) > self._settings.max_frame_bytes:
            raise InvalidArgument.field(
                "audio",
                f"a frame is at most {self._settings.max_frame_bytes} bytes (got {len(frame)})",
                reason=Reason.AUDIO_FRAME_TOO_LARGE,
            )
        try:
            samples = self._decoder.decode(frame)
        except ValueError as exc:
            raise InvalidArgument.field("audio", str(exc), reason=Reason.CORRUPT_AUDIO) from None
        self._pacer.take(samples.shape[0] / WHISPER_SAMPLE_RATE_HZ)
        self._samples += samples.shape[0]
        return self._events(self._activity.feed(samples))

    def finish(self) -> list[Heard]:
        """The client closed its side: a turn in progress ends here."""
        return self._events(self._activity.flush())

    def close(self) -> None:
        self._decoder.close()

    def _events(self, found: list[turns.TurnEvent]) -> list[Heard]:
        events: list[Heard] = []
        for event in found:
            if isinstance(event, turns.SpeechStarted):
                self.speaking = True
                events.append(SpeechBegan(event.audio_start_s))
            elif isinstance(event, turns.SpeechPaused):
                self.speaking = False
                events.append(SpeechPaused(event.audio_end_s, event.turn_audio))
            elif isinstance(event, turns.SpeechResumed):
                self.speaking = True
                events.append(SpeechResumed())
            elif isinstance(event, turns.SpeechStopped):
                self.speaking = False
                events.append(SpeechEnded(event.audio_end_s, event.turn_audio, event.cut))
        return events
