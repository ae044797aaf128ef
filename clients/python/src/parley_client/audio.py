"""WAV audio for live voice (``ChatService.Converse``): read a PCM WAV file as 16 kHz mono PCM16
in 20 ms frames, pace frames at real time, and write PCM16 as a WAV file.

Standard library only (``wave``, ``array``): the SDK depends on grpcio and protobuf alone, and a
WAV file needs no codec. What ``wave`` reads is integer PCM (8-bit unsigned, 16, 24 or 32-bit
signed), any sample rate, any number of channels; other files (float WAV, WAVE_FORMAT_EXTENSIBLE
before Python 3.12, MP3 ...) raise :class:`WavError` (convert them first, e.g.
``ffmpeg -i IN -ac 1 -ar 16000 OUT.wav``). Channels are averaged; the sample rate is converted
by band-limited interpolation (a Blackman-windowed sinc, cutoff 95 % of the lower Nyquist
frequency, 16 zero crossings each side), streamed block by block so memory stays small.
"""

from __future__ import annotations

import asyncio
import math
import os
import sys
import time
import wave
from array import array
from collections.abc import AsyncIterator, Iterable, Iterator
from operator import mul
from types import TracebackType
from typing import BinaryIO

__all__ = [
    "FRAME_SECONDS",
    "RATE_HZ",
    "Resampler",
    "WavError",
    "WavFile",
    "convert_pcm16",
    "paced",
    "pcm16_frames",
    "write_wav",
]

#: Sample rate of Converse's PCM16 input (Hz).
RATE_HZ = 16_000
#: Length of one frame of live audio (s): 320 samples, 640 bytes at 16 kHz.
FRAME_SECONDS = 0.02

_ROLLOFF = 0.95
_ZERO_CROSSINGS = 16
_BLOCK_FRAMES = 4096  # WAV frames read at a time
_BIG_ENDIAN = sys.byteorder == "big"


class WavError(ValueError):
    """Not a WAV file this module reads (the message says why and what to do)."""


def _blackman(x: float) -> float:
    """The Blackman window on [-1, 1]."""
    return 0.42 + 0.5 * math.cos(math.pi * x) + 0.08 * math.cos(2 * math.pi * x)


class Resampler:
    """Sample-rate conversion of a stream of float samples, block by block.

    ``feed`` takes input samples and returns the output samples they complete; ``finish`` ends
    the input (zeros after it) and returns the rest. In all, ``ceil(n * to_hz / from_hz)``
    samples come out for ``n`` in. Each output sample is the input under a windowed-sinc low-pass
    filter (unity gain at DC), so frequencies above the lower rate's Nyquist are removed rather
    than folded back (aliased).
    """

    def __init__(self, from_hz: int, to_hz: int) -> None:
        if from_hz <= 0 or to_hz <= 0:
            raise ValueError(f"sample rates must be positive, not {from_hz} and {to_hz}")
        common = math.gcd(from_hz, to_hz)
        self._up, self._down = to_hz // common, from_hz // common
        self._cutoff = 0.5 * min(1.0, to_hz / from_hz) * _ROLLOFF  # cycles per input sample
        self._half = _ZERO_CROSSINGS / (2 * self._cutoff)  # half the filter's width, input samples
        self._reach = math.ceil(self._half)
        self._taps: dict[int, list[float]] = {}
        # Input held (from absolute index ``_start``), already padded with zeros before sample 0.
        self._buffer = array("d", bytes(8 * self._reach))
        self._start = -self._reach
        self._fed = 0
        self._next = 0  # index of the next output sample

    def _phase_taps(self, phase: int) -> list[float]:
        """Weights of inputs ``i - reach + 1 .. i + reach`` for an output at ``i + phase / up``."""
        taps = self._taps.get(phase)
        if taps is None:
            frac = phase / self._up
            taps = []
            for j in range(-self._reach + 1, self._reach + 1):
                u = frac - j
                if abs(u) >= self._half:
                    taps.append(0.0)
                    continue
                x = 2 * self._cutoff * u
                sinc = 1.0 if x == 0 else math.sin(math.pi * x) / (math.pi * x)
                taps.append(sinc * _blackman(u / self._half))
            total = sum(taps)
            taps = [t / total for t in taps]
            self._taps[phase] = taps
        return taps

    def _run(self, limit: int | None = None) -> array[float]:
        """Every output sample whose inputs are all in the buffer (up to ``limit`` in all)."""
        out = array("d")
        buffer, reach, up, down = self._buffer, self._reach, self._up, self._down
        available_until = self._start + len(buffer)
        while limit is None or self._next < limit:
            i, phase = divmod(self._next * down, up)
            if i + reach >= available_until:
                break
            first = i - reach + 1 - self._start
            out.append(sum(map(mul, self._phase_taps(phase), buffer[first : first + 2 * reach])))
            self._next += 1
        # Drop what no later output reads.
        i = self._next * down // up
        drop = i - reach + 1 - self._start
        if drop > 0:
            del buffer[:drop]
            self._start += drop
        return out

    def feed(self, samples: Iterable[float]) -> array[float]:
        """Take more input; the output samples it completes."""
        before = len(self._buffer)
        self._buffer.extend(samples)
        self._fed += len(self._buffer) - before
        return self._run()

    def finish(self) -> array[float]:
        """End the input; the remaining output samples."""
        self._buffer.extend([0.0] * (self._reach + 1))
        return self._run(limit=-(-self._fed * self._up // self._down))


def _to_float(data: bytes, width: int) -> array[float]:
    """Interleaved integer PCM (little-endian; 8-bit unsigned) as floats in [-1, 1)."""
    if width == 1:
        return array("d", ((b - 128) / 128 for b in data))
    if width == 3:  # 24-bit: widen to 32-bit with a zero low byte
        widened = bytearray(len(data) // 3 * 4)
        widened[1::4], widened[2::4], widened[3::4] = data[0::3], data[1::3], data[2::3]
        data, width = bytes(widened), 4
    ints = array("h" if width == 2 else "i")
    if ints.itemsize != width:  # pragma: no cover - "i" is 4 bytes on every supported platform
        raise WavError(f"{8 * width}-bit samples are not supported on this platform")
    ints.frombytes(data)
    if _BIG_ENDIAN:  # pragma: no cover
        ints.byteswap()
    scale = 1 / (1 << (8 * width - 1))
    return array("d", (v * scale for v in ints))


def _downmix(samples: array[float], channels: int) -> array[float]:
    if channels == 1:
        return samples
    mixed = array("d", samples[0::channels])
    for channel in range(1, channels):
        mixed = array("d", map(float.__add__, mixed, samples[channel::channels]))
    return array("d", (v / channels for v in mixed))


def _to_pcm16(samples: Iterable[float]) -> bytes:
    ints = array("h", (max(-32768, min(32767, round(v * 32768))) for v in samples))
    if _BIG_ENDIAN:  # pragma: no cover
        ints.byteswap()
    return ints.tobytes()


def convert_pcm16(data: bytes, from_hz: int, to_hz: int) -> bytes:
    """Mono PCM16 (little-endian) at ``from_hz`` as PCM16 at ``to_hz`` (resampled)."""
    if from_hz == to_hz:
        return data
    resampler = Resampler(from_hz, to_hz)
    samples = resampler.feed(_to_float(data[: len(data) // 2 * 2], 2))
    samples.extend(resampler.finish())
    return _to_pcm16(samples)


class WavFile:
    """A PCM WAV file, read as 16 kHz mono PCM16 (:meth:`frames`).

    Args:
        source: a path, or a binary file object positioned at the WAV header.

    Raises:
        OSError: the file cannot be opened.
        WavError: it is not an integer-PCM WAV file (the header is read here, at once).

    Use it as a context manager (or call :meth:`close`). ``rate_hz``, ``channels`` and
    ``sample_width`` (bytes) describe the file as stored.
    """

    def __init__(self, source: str | os.PathLike[str] | BinaryIO) -> None:
        self.name = os.fspath(source) if isinstance(source, str | os.PathLike) else "<file>"
        try:
            # Open for the object's life (closed by close() / the with block).
            self._wav = wave.open(  # noqa: SIM115
                os.fspath(source) if isinstance(source, os.PathLike) else source, "rb"
            )
        except (wave.Error, EOFError) as exc:
            raise WavError(
                f"{self.name} is not a PCM WAV file ({exc}); convert it, e.g. "
                "`ffmpeg -i IN -ac 1 -ar 16000 OUT.wav`"
            ) from None
        self.rate_hz = self._wav.getframerate()
        self.channels = self._wav.getnchannels()
        self.sample_width = self._wav.getsampwidth()
        if self.sample_width not in (1, 2, 3, 4) or self.channels < 1 or self.rate_hz < 1:
            self._wav.close()
            raise WavError(
                f"{self.name}: {8 * self.sample_width}-bit, {self.channels} channels at {self.rate_hz} Hz "
                "is not a PCM layout this reader knows"
            )

    def __enter__(self) -> WavFile:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._wav.close()

    def pcm16(self) -> Iterator[bytes]:
        """The file's audio as 16 kHz mono PCM16 (little-endian), in blocks of any length. The
        data chunk is read to its end (streams written with a placeholder size read fine)."""
        width, channels = self.sample_width, self.channels
        if (width, channels, self.rate_hz) == (2, 1, RATE_HZ) and not _BIG_ENDIAN:
            while block := self._wav.readframes(_BLOCK_FRAMES):
                yield block[: len(block) // 2 * 2]
            return
        resampler = Resampler(self.rate_hz, RATE_HZ) if self.rate_hz != RATE_HZ else None
        frame_bytes = width * channels
        while block := self._wav.readframes(_BLOCK_FRAMES):
            mono = _downmix(_to_float(block[: len(block) // frame_bytes * frame_bytes], width), channels)
            yield _to_pcm16(resampler.feed(mono) if resampler else mono)
        if resampler is not None:
            yield _to_pcm16(resampler.finish())

    def frames(
        self, *, frame_seconds: float = FRAME_SECONDS, trailing_silence_s: float = 0.0
    ) -> Iterator[bytes]:
        """:meth:`pcm16` cut into frames of ``frame_seconds`` (the last padded with silence), then
        ``trailing_silence_s`` of silent frames (rounded up to whole frames)."""
        return pcm16_frames(self.pcm16(), frame_seconds=frame_seconds, trailing_silence_s=trailing_silence_s)


def pcm16_frames(
    blocks: Iterable[bytes], *, frame_seconds: float = FRAME_SECONDS, trailing_silence_s: float = 0.0
) -> Iterator[bytes]:
    """16 kHz mono PCM16 ``blocks`` (any lengths, whole samples) as frames of exactly
    ``frame_seconds`` (0.02 s: 640 bytes); the last one is padded with zeros, and
    ``trailing_silence_s`` of zero frames follow (rounded up to whole frames).

    Raises:
        ValueError: ``frame_seconds`` is not a whole number of samples between 1 and 16,384
            (the server's largest frame is 32,768 bytes), or ``trailing_silence_s`` < 0.
    """
    samples = frame_seconds * RATE_HZ
    if not 1 <= round(samples) <= 16_384 or abs(samples - round(samples)) > 1e-6:
        raise ValueError(f"frame_seconds={frame_seconds} is not a whole number of 16 kHz samples")
    if trailing_silence_s < 0:
        raise ValueError("trailing_silence_s must not be negative")
    size = 2 * round(samples)
    pending = bytearray()
    for block in blocks:
        pending.extend(block)
        whole = len(pending) // size * size
        for start in range(0, whole, size):
            yield bytes(pending[start : start + size])
        del pending[:whole]
    if pending:
        yield bytes(pending) + bytes(size - len(pending))
    silence = bytes(size)
    for _ in range(math.ceil(trailing_silence_s / frame_seconds - 1e-9)):
        yield silence


async def paced(frames: Iterable[bytes], *, frame_seconds: float = FRAME_SECONDS) -> AsyncIterator[bytes]:
    """``frames`` at real-time pace, as a microphone gives them: frame ``k`` (from 0) when
    ``k * frame_seconds`` have passed since the first, on a fixed schedule that does not drift
    with the time the caller takes between frames (a late frame is yielded at once)."""
    started = time.monotonic()
    for index, frame in enumerate(frames):
        wait = started + index * frame_seconds - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        yield frame


def write_wav(path: str | os.PathLike[str] | BinaryIO, pcm16: bytes, rate_hz: int) -> None:
    """Write mono PCM16 (little-endian) samples at ``rate_hz`` as a WAV file."""
    with wave.open(os.fspath(path) if isinstance(path, os.PathLike) else path, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate_hz)
        out.writeframes(pcm16)
