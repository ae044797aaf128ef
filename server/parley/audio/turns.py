"""Turn detection: where a speaker's turn starts and ends, from per-window speech probabilities.

A pure state machine (no model, no clock): :class:`TurnDetector` is given the stream's samples and
the speech probability of each consecutive window of them (``parley.audio.vad`` computes those
with Silero VAD) and answers with :data:`TurnEvent` values. Positions are seconds of stream audio
(sample index / sample rate), never wall time, so the same audio always gives the same events.

The rules follow Silero's own ``get_speech_timestamps``, made incremental:

* **Hysteresis.** A window starts speech when its probability is at least ``threshold``; once
  speaking, only a window below ``neg_threshold`` (``threshold - 0.15``) counts as silence, and a
  silence run is only broken by a window at or above ``threshold`` again. A dip to 0.4 does not
  end speech; a rise to 0.4 does not end a silence.
* **Minimum speech.** A run of speech shorter than ``min_speech_s`` (a click, a cough, a tap on
  the microphone) starts no turn. The turn's start is the run's first window, announced once the
  run is long enough.
* **Pause, resume, stop.** The first silent window after speech emits :class:`SpeechPaused` with
  the turn's audio so far, so a caller can start transcribing before the silence timer runs out;
  :class:`SpeechResumed` says that work is void; :class:`SpeechStopped` comes ``silence_s`` after
  the end of speech. When speech did not resume, the stopped turn's audio is *exactly* the paused
  one's (same samples), so a speculative transcript of it can be used as is.
* **Maximum turn.** A turn's audio never exceeds ``max_turn_s`` (Whisper reads 30 s at a time).
  A turn that reaches it is cut (``cut=True``): at the start of its latest pause of at least
  0.1 s when that leaves the next turn no more than half of ``max_turn_s`` (Silero's rule, so
  a word is not split), else right there; the speech that goes on becomes the next turn.

Turn audio runs from ``prefix_padding_s`` before the start of speech (less when the stream or the
previous turn is closer) to one window after the end of speech (the first silent window, which
holds the decay of the last sound), or to the cut point. Consecutive turns never share samples.

Memory is bounded: between turns the detector keeps only ``prefix_padding_s`` of audio; during a
turn at most ``max_turn_s``; plus samples pushed whose probabilities have not been pushed yet.

Cost: pure Python bookkeeping, about 11 µs of CPU per window (32 ms); run it inline.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
import numpy.typing as npt

__all__ = [
    "SpeechPaused",
    "SpeechResumed",
    "SpeechStarted",
    "SpeechStopped",
    "TurnDetector",
    "TurnEvent",
    "TurnSettings",
]

#: Silero's ``neg_threshold`` is ``threshold - 0.15`` (never below 0.01).
_HYSTERESIS = 0.15
_MIN_NEG_THRESHOLD = 0.01
#: A pause must last this long to be a place where a too-long turn may be cut (Silero: 98 ms).
_MIN_CUT_PAUSE_S = 0.1


@dataclass(frozen=True, slots=True)
class TurnSettings:
    """How turns are detected. All durations in seconds of stream audio.

    Attributes:
        threshold: speech probability (0-1) at or above which a window is speech. 0.5 is OpenAI
            Realtime ``server_vad``'s and Silero's default.
        min_speech_s: shortest run of speech that starts a turn. 0.25 s is Silero's own
            ``min_speech_duration_ms`` default: it drops clicks and breaths (one or two 32 ms
            windows) yet keeps a one-syllable "yes" or "no" (about 0.3 s), and costs barge-in only
            that much delay.
        silence_s: silence after speech that ends the turn (OpenAI's ``silence_duration_ms``: 500).
        prefix_padding_s: audio kept before the start of speech (OpenAI's ``prefix_padding_ms``:
            300), so the first phoneme is not clipped.
        max_turn_s: longest turn audio; a longer turn is cut (30 s: one Whisper window).

    Raises:
        ValueError: a value out of range: ``threshold`` not in (0, 1], a negative duration,
            ``silence_s`` not positive, or ``max_turn_s`` not above
            ``prefix_padding_s + min_speech_s``.
    """

    threshold: float = 0.5
    min_speech_s: float = 0.25
    silence_s: float = 0.5
    prefix_padding_s: float = 0.3
    max_turn_s: float = 30.0

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if not self.min_speech_s >= 0.0 or not self.prefix_padding_s >= 0.0:
            raise ValueError(
                f"min_speech_s and prefix_padding_s must not be negative, got {self.min_speech_s} "
                f"and {self.prefix_padding_s}"
            )
        if not self.silence_s > 0.0:
            raise ValueError(f"silence_s must be positive, got {self.silence_s}")
        if not self.max_turn_s > self.prefix_padding_s + self.min_speech_s or math.isinf(self.max_turn_s):
            raise ValueError(
                f"max_turn_s must be finite and above prefix_padding_s + min_speech_s "
                f"({self.prefix_padding_s + self.min_speech_s:g}), got {self.max_turn_s}"
            )

    @property
    def neg_threshold(self) -> float:
        """Probability below which a window ends a run of speech: ``threshold - 0.15``, at least 0.01."""
        return max(self.threshold - _HYSTERESIS, _MIN_NEG_THRESHOLD)


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """A turn began. ``audio_start_s``: stream position (s) of its first speech window."""

    audio_start_s: float


@dataclass(frozen=True, slots=True, eq=False)
class SpeechPaused:
    """Speech stopped for now; the turn ends with this audio unless :class:`SpeechResumed` follows.

    Attributes:
        audio_start_s: where the turn's speech began (s), as in its :class:`SpeechStarted`.
        audio_end_s: end of the last speech window (s).
        turn_audio: float32, shape ``(n,)``: the turn's audio from its prefix padding to one window
            after ``audio_end_s``.
        turn_audio_start_s: stream position (s) of ``turn_audio[0]``.
    """

    audio_start_s: float
    audio_end_s: float
    turn_audio: npt.NDArray[np.float32]
    turn_audio_start_s: float


@dataclass(frozen=True, slots=True)
class SpeechResumed:
    """Speech came back before the turn ended: the last :class:`SpeechPaused` is void.

    ``audio_s``: stream position (s) of the first speech window after the pause.
    """

    audio_s: float


@dataclass(frozen=True, slots=True, eq=False)
class SpeechStopped:
    """A turn ended.

    Attributes:
        audio_start_s: where the turn's speech began (s).
        audio_end_s: end of its last speech window, or the cut point (s).
        turn_audio: float32, shape ``(n,)``, at most ``max_turn_s`` long: from the prefix padding
            to one window after ``audio_end_s`` (identical to the last :class:`SpeechPaused`'s),
            or to ``audio_end_s`` for a turn cut in the middle of speech.
        turn_audio_start_s: stream position (s) of ``turn_audio[0]``.
        cut: True when ``max_turn_s`` ended the turn rather than silence (or the stream's end).
    """

    audio_start_s: float
    audio_end_s: float
    turn_audio: npt.NDArray[np.float32]
    turn_audio_start_s: float
    cut: bool


TurnEvent = SpeechStarted | SpeechPaused | SpeechResumed | SpeechStopped


class _State(Enum):
    IDLE = "idle"  # no speech
    PENDING = "pending"  # a run of speech shorter than min_speech
    SPEAKING = "speaking"  # in a turn (possibly in a pause of it)


class _Tape:
    """The stream's audio from some sample index on, as chunks (appends never copy the past)."""

    def __init__(self) -> None:
        self._chunks: deque[npt.NDArray[np.float32]] = deque()
        self.start = 0  # stream index of the first sample held
        self.end = 0  # stream index one past the last sample held

    def append(self, samples: npt.NDArray[np.float32]) -> None:
        if samples.shape[0]:
            self._chunks.append(samples)
            self.end += samples.shape[0]

    def drop_before(self, index: int) -> None:
        while self._chunks and self.start + self._chunks[0].shape[0] <= index:
            self.start += self._chunks.popleft().shape[0]
        if self._chunks and self.start < index:
            self._chunks[0] = self._chunks[0][index - self.start :]
            self.start = index

    def slice(self, begin: int, end: int) -> npt.NDArray[np.float32]:
        if not self.start <= begin <= end <= self.end:  # pragma: no cover - the detector's own bug
            raise AssertionError(f"[{begin}, {end}) is outside the tape [{self.start}, {self.end})")
        parts: list[npt.NDArray[np.float32]] = []
        offset = self.start
        for chunk in self._chunks:
            lo, hi = max(begin - offset, 0), min(end - offset, chunk.shape[0])
            if lo < hi:
                parts.append(chunk[lo:hi])
            offset += chunk.shape[0]
            if offset >= end:
                break
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


class TurnDetector:
    """Turn events of one audio stream from its samples and per-window speech probabilities.

    Window ``k`` covers samples ``[k * window_samples, (k + 1) * window_samples)`` of the stream.
    Push samples in order, each time with the probabilities of the windows completed so far (as
    ``SpeechProbabilities.feed`` returns them): ``detector.push(pcm, probabilities.feed(pcm))``.
    Not thread-safe: one detector per stream.

    Args:
        settings: the thresholds and durations.
        sample_rate_hz: rate of the samples (Hz); Silero runs at 16 kHz.
        window_samples: samples per probability (512 for Silero at 16 kHz: 32 ms).

    Raises:
        ValueError: ``sample_rate_hz`` or ``window_samples`` is not positive, or ``max_turn_s``
            is shorter than the prefix padding plus the minimum speech (in whole windows) plus
            one window.
    """

    def __init__(
        self, settings: TurnSettings | None = None, *, sample_rate_hz: int = 16_000, window_samples: int = 512
    ) -> None:
        if sample_rate_hz <= 0 or window_samples <= 0:
            raise ValueError(
                f"sample_rate_hz and window_samples must be positive, got {sample_rate_hz}, {window_samples}"
            )
        self.settings = settings if settings is not None else TurnSettings()
        self._rate = sample_rate_hz
        self._w = window_samples
        s = self.settings
        self._min_speech = max(math.ceil(s.min_speech_s * sample_rate_hz - 1e-6), 1)
        self._silence = math.ceil(s.silence_s * sample_rate_hz - 1e-6)
        self._prefix = round(s.prefix_padding_s * sample_rate_hz)
        self._max_turn = math.floor(s.max_turn_s * sample_rate_hz + 1e-6)
        self._min_cut_pause = round(_MIN_CUT_PAUSE_S * sample_rate_hz)
        shortest = (
            self._prefix + math.ceil(self._min_speech / window_samples) * window_samples + window_samples
        )
        if self._max_turn < shortest:
            raise ValueError(
                f"max_turn_s ({s.max_turn_s:g}) must leave room for the prefix padding, the minimum "
                f"speech and one window: at least {shortest / sample_rate_hz:g} s"
            )
        self._tape = _Tape()
        self._windows = 0  # windows classified so far
        self._state = _State.IDLE
        self._floor = 0  # no turn's audio may start before this (the previous turn's end)
        self._candidate = 0  # PENDING: first window of the run of speech
        self._speech_start = 0  # SPEAKING: first sample of the turn's speech
        self._turn_begin = 0  # SPEAKING: first sample of the turn's audio
        self._silence_from: int | None = None  # SPEAKING: start of the current pause
        self._pause: tuple[int, int] | None = None  # SPEAKING: latest pause >= 0.1 s, (start, end)

    @property
    def window_s(self) -> float:
        """Duration of one window (s)."""
        return self._w / self._rate

    @property
    def position_s(self) -> float:
        """End of the classified audio (s): windows pushed x ``window_s``."""
        return self._windows * self._w / self._rate

    @property
    def buffered_samples(self) -> int:
        """Samples held in memory (the bound the module docstring states)."""
        return self._tape.end - self._tape.start

    @property
    def in_turn(self) -> bool:
        """Whether a turn has started and not ended."""
        return self._state is _State.SPEAKING

    def push(self, samples: npt.NDArray[np.floating], probabilities: Sequence[float]) -> list[TurnEvent]:
        """Append ``samples`` to the stream, then classify the next ``len(probabilities)`` windows.

        Args:
            samples: mono, shape ``(n,)``, floats in [-1, 1] (copied to float32 if needed); may be empty.
            probabilities: speech probability (0-1) of each next window, in order; may be empty.

        Returns:
            The events those windows caused, in stream order.

        Raises:
            ValueError: ``samples`` is not one-dimensional, or a probability is given for a window
                whose samples have not all been pushed.
        """
        if samples.ndim != 1:
            raise ValueError(f"samples must be mono with shape (n,), got shape {samples.shape}")
        needed = (self._windows + len(probabilities)) * self._w
        if needed > self._tape.end + samples.shape[0]:
            raise ValueError(
                f"{len(probabilities)} probabilities need the stream to reach sample {needed}, "
                f"but only {self._tape.end + samples.shape[0]} samples were pushed"
            )
        self._tape.append(np.array(samples, dtype=np.float32, copy=True))
        events: list[TurnEvent] = []
        for probability in probabilities:
            self._window(float(probability), events)
            self._windows += 1
        self._trim()
        return events

    def flush(self) -> list[TurnEvent]:
        """End of stream: end a turn in progress (``cut=False``) at its last speech window.

        Returns:
            ``[SpeechStopped]`` when a turn was in progress, else ``[]``. The detector can go on
            being pushed afterwards (a new turn needs new speech).
        """
        if self._state is not _State.SPEAKING:
            self._state = _State.IDLE
            return []
        end = self._windows * self._w
        events: list[TurnEvent]
        if self._silence_from is not None:
            events = [self._stop(self._silence_from, self._silence_from + self._w, cut=False)]
        else:
            events = [self._stop(end, end, cut=False)]
        self._trim()
        return events

    # -- the state machine, one window at a time ------------------------------------------------

    def _window(self, p: float, events: list[TurnEvent]) -> None:
        start = self._windows * self._w
        end = start + self._w
        s = self.settings
        if self._state is _State.IDLE:
            if p < s.threshold:
                return
            self._state, self._candidate = _State.PENDING, start
        if self._state is _State.PENDING:
            if p < s.neg_threshold:
                self._state = _State.IDLE
            elif end - self._candidate >= self._min_speech:
                self._begin(self._candidate, max(self._floor, self._candidate - self._prefix), events)
            return
        # SPEAKING
        if p >= s.threshold and self._silence_from is not None:
            if start - self._silence_from >= self._min_cut_pause:
                self._pause = (self._silence_from, start)
            self._silence_from = None
            events.append(SpeechResumed(start / self._rate))
        elif p < s.neg_threshold:
            if self._silence_from is None:
                self._silence_from = start
                events.append(
                    SpeechPaused(
                        self._speech_start / self._rate,
                        start / self._rate,
                        self._tape.slice(self._turn_begin, end),
                        self._turn_begin / self._rate,
                    )
                )
            if end - self._silence_from >= self._silence:
                events.append(self._stop(self._silence_from, self._silence_from + self._w, cut=False))
                return
        if end + self._w - self._turn_begin > self._max_turn:  # the next window would not fit
            self._cut(end, events)

    def _cut(self, end: int, events: list[TurnEvent]) -> None:
        if self._silence_from is not None:  # in a pause: end the turn as silence would have
            events.append(self._stop(self._silence_from, self._silence_from + self._w, cut=True))
            return
        if self._pause is not None:
            pause_start, resumed = self._pause
            next_begin = max(pause_start + self._w, resumed - self._prefix)
            if end - next_begin <= self._max_turn // 2:
                events.append(self._stop(pause_start, pause_start + self._w, cut=True))
                self._begin(resumed, next_begin, events)
                return
        events.append(self._stop(end, end, cut=True))
        # The speech goes on: it is the next turn's if it lasts min_speech more.
        self._state, self._candidate = _State.PENDING, end

    def _begin(self, speech_start: int, turn_begin: int, events: list[TurnEvent]) -> None:
        self._state = _State.SPEAKING
        self._speech_start, self._turn_begin = speech_start, turn_begin
        self._silence_from = self._pause = None
        events.append(SpeechStarted(speech_start / self._rate))

    def _stop(self, speech_end: int, audio_end: int, *, cut: bool) -> SpeechStopped:
        audio = self._tape.slice(self._turn_begin, audio_end)
        event = SpeechStopped(
            self._speech_start / self._rate,
            speech_end / self._rate,
            audio,
            self._turn_begin / self._rate,
            cut,
        )
        self._state = _State.IDLE
        self._floor = audio_end
        self._silence_from = self._pause = None
        return event

    def _trim(self) -> None:
        """Drop audio no turn can need any more."""
        if self._state is _State.SPEAKING:
            keep = self._turn_begin
        elif self._state is _State.PENDING:
            keep = max(self._floor, self._candidate - self._prefix)
        else:
            keep = max(self._floor, self._windows * self._w - self._prefix)
        self._tape.drop_before(keep)
