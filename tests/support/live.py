"""A live-voice test client for ChatService.Converse: a microphone and a loudspeaker in threads.

The "microphone" sends a 20 ms frame every 20 ms of wall time: the next frame of what it was
told to say, else silence (a live microphone never stops sending). The "loudspeaker" plays each
reply in real time from its first audio chunk and reports, every 200 ms, how much it has played
(``playback`` marks). A test says when to speak (``say``) and reads the events as they come.
"""

from __future__ import annotations

import io
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import av
import numpy as np
import numpy.typing as npt
from parley_proto.v1 import chat_service_pb2 as pb

from tests.audio.audio_samples import espeak_wav

__all__ = ["FRAME_S", "LiveCall", "Reply", "pcm16_speech"]

FRAME_S = 0.02
RATE_HZ = 16_000
FRAME_SAMPLES = int(RATE_HZ * FRAME_S)
MARK_EVERY_S = 0.2


def pcm16_speech(text: str, voice: str = "en-us") -> npt.NDArray[np.int16]:
    """espeak-ng saying ``text``, as 16 kHz mono int16 samples."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE_HZ)
    parts: list[npt.NDArray[np.int16]] = []
    with av.open(io.BytesIO(espeak_wav(text, voice))) as container:
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                parts.append(out.to_ndarray().reshape(-1))
    for out in resampler.resample(None):
        parts.append(out.to_ndarray().reshape(-1))
    return np.concatenate(parts).astype(np.int16)


@dataclass
class Reply:
    """One reply as the loudspeaker got it."""

    name: str
    sentences: list[tuple[str, float]] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    sample_rate_hz: int = 0
    first_audio: float | None = None
    text: str = ""
    completed: pb.Message | None = None
    interrupted: pb.Interrupted | None = None

    @property
    def audio_s(self) -> float:
        return sum(seconds for _, seconds in self.sentences)

    def played_s(self, now: float) -> float:
        if self.first_audio is None or self.interrupted is not None:
            return 0.0
        return min(self.audio_s, now - self.first_audio)


class LiveCall:
    """One Converse call (see the module docstring). Use as a context manager."""

    def __init__(self, stub: object, config: pb.ConverseConfig, *, marks: bool = True) -> None:
        self._requests: queue.Queue[pb.ConverseRequest | None] = queue.Queue()
        self._speech: deque[bytes] = deque()
        self._lock = threading.Lock()
        self._marks = marks
        self._stop = threading.Event()
        self.events: list[pb.ConverseEvent] = []
        self.replies: list[Reply] = []
        self.error: Exception | None = None
        self._arrived = threading.Condition()
        self._requests.put(pb.ConverseRequest(config=config))
        self._call = stub.Converse(self._iterate())  # type: ignore[attr-defined]
        self._mic = threading.Thread(target=self._microphone, daemon=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._mic.start()
        self._reader.start()

    def __enter__(self) -> LiveCall:
        return self

    def __exit__(self, *exc: object) -> None:
        self.hang_up()

    # --- what the test does -------------------------------------------------------------------

    def say(self, samples: npt.NDArray[np.int16]) -> None:
        """Speak ``samples`` (16 kHz int16) through the microphone, at real-time pace."""
        frames = [samples[i : i + FRAME_SAMPLES] for i in range(0, samples.shape[0], FRAME_SAMPLES)]
        with self._lock:
            self._speech.extend(np.pad(f, (0, FRAME_SAMPLES - f.shape[0])).tobytes() for f in frames)

    def speaking(self) -> bool:
        with self._lock:
            return bool(self._speech)

    def wait(self, predicate: object, timeout: float = 120.0) -> None:
        """Block until ``predicate()`` is true (checked on every event) or fail."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while not predicate():  # type: ignore[operator]
                if self.error is not None:
                    raise self.error
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out; events so far: {[_kind(e) for e in self.events]}")
                self._arrived.wait(min(left, 0.1))

    def hang_up(self) -> None:
        """Stop the microphone and close the request side; wait for the stream to end."""
        self._stop.set()
        self._mic.join(5)
        self._requests.put(None)
        self._reader.join(120)

    def kinds(self) -> list[str]:
        return [_kind(e) for e in self.events]

    # --- threads ------------------------------------------------------------------------------

    def _iterate(self) -> Iterator[pb.ConverseRequest]:
        while (request := self._requests.get()) is not None:
            yield request

    def _microphone(self) -> None:
        silence = bytes(FRAME_SAMPLES * 2)
        started = time.monotonic()
        sent = 0
        last_mark = 0.0
        while not self._stop.is_set():
            with self._lock:
                frame = self._speech.popleft() if self._speech else silence
            self._requests.put(pb.ConverseRequest(audio=frame))
            sent += 1
            now = time.monotonic()
            if self._marks and now - last_mark >= MARK_EVERY_S:
                last_mark = now
                self._mark(now)
            time.sleep(max(0.0, started + sent * FRAME_S - time.monotonic()))

    def _mark(self, now: float) -> None:
        with self._lock:
            playing = [r for r in self.replies if r.first_audio is not None and r.interrupted is None]
        for reply in playing[-1:]:
            played = pb.Playback(message=reply.name)
            played.played_duration.FromNanoseconds(round(reply.played_s(now) * 1e9))
            self._requests.put(pb.ConverseRequest(playback=played))

    def _read(self) -> None:
        try:
            for event in self._call:
                self._take(event)
                with self._arrived:
                    self.events.append(event)
                    self._arrived.notify_all()
        except Exception as exc:  # grpc.RpcError: the test reads it from .error
            self.error = exc
        finally:
            with self._arrived:
                self._arrived.notify_all()

    def _take(self, event: pb.ConverseEvent) -> None:
        kind = event.WhichOneof("event")
        with self._lock:
            if kind == "chat_event":
                chat = event.chat_event
                inner = chat.WhichOneof("event")
                if inner == "message_accepted":
                    self.replies.append(Reply(chat.message_accepted.assistant_message))
                elif inner == "text_delta":
                    self.replies[-1].text += chat.text_delta.text
                elif inner == "audio_chunk":
                    reply = self.replies[-1]
                    chunk = chat.audio_chunk
                    if reply.first_audio is None:
                        reply.first_audio = time.monotonic()
                    if chunk.text:
                        reply.sentences.append((chunk.text, chunk.duration.ToNanoseconds() / 1e9))
                    reply.audio.extend(chunk.data)
                    reply.sample_rate_hz = chunk.sample_rate_hz
                elif inner == "message_completed":
                    self.replies[-1].completed = chat.message_completed.message
            elif kind == "interrupted":
                for reply in self.replies:
                    if reply.name == event.interrupted.message.name:
                        reply.interrupted = event.interrupted


def _kind(event: pb.ConverseEvent) -> str:
    kind = str(event.WhichOneof("event"))
    return f"chat_event.{event.chat_event.WhichOneof('event')}" if kind == "chat_event" else kind
