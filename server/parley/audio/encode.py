"""Encode PCM to a streamable audio file, piece by piece (PyAV / FFmpeg).

One :class:`AudioEncoder` makes one file. Each :meth:`AudioEncoder.encode` call returns the bytes
the muxer produced so far, and :meth:`AudioEncoder.flush` the rest; concatenated in order they are
one valid file. That is what lets a voice reply go out sentence by sentence: send each call's
bytes as an ``AudioChunk`` as soon as the sentence is synthesized.

The muxer writes to a sink that cannot seek, so nothing already returned is ever rewritten:

* ``mp3``: MPEG-1/2 Layer III frames (libmp3lame, CBR), no ID3 tag and no Xing/Info frame
  (those need a seek back to fill in). Players take the length from the frames.
* ``opus``: Opus in Ogg (RFC 7845), always 48 kHz (Opus's internal rate: input is resampled).
  Ogg pages are cut every ``OGG_PAGE_DURATION_S`` so bytes leave promptly.
* ``wav``: 16-bit PCM in RIFF/WAVE with the streaming-writer convention for an unknown length:
  the RIFF and ``data`` chunk sizes are ``0xFFFFFFFF`` (FFmpeg's own output when it writes WAV to a
  pipe). FFmpeg/PyAV and browsers decode up to the end of the bytes; ``sox`` does too but warns
  ("premature EOF") and ``soxi`` reports a bogus duration from the placeholder size. Writing the
  header only at flush would fix the sizes but hold every byte back until the end.
* ``pcm16``: raw 16-bit little-endian mono samples at the input rate, no header: a live player
  (Converse) can play every chunk as it arrives.

All methods are CPU-bound and blocking (MP3 and Opus: about 25 ms per second of audio, WAV nearly
free); run them in a worker thread from async code. An encoder is not thread-safe: use one per stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

import av
import av.container
import numpy as np
import numpy.typing as npt

__all__ = ["OGG_PAGE_DURATION_S", "AudioEncoder", "OutputFormat"]

OutputFormat = Literal["mp3", "opus", "wav", "pcm16"]

#: Longest audio an Ogg page holds before it is written out (s). libopus's tools use 1 s; shorter
#: pages cost ~30 bytes each but let a sentence's audio leave with that sentence.
OGG_PAGE_DURATION_S = 0.1


@dataclass(frozen=True, slots=True)
class _Spec:
    muxer: str
    codec: str
    mime_type: str
    bit_rate: int | None  # bits per second; None for PCM
    rates_hz: tuple[int, ...] | None  # sample rates the codec takes; None = any
    muxer_options: dict[str, str] = field(default_factory=dict)


#: Speech-oriented settings: 64 kbit/s mono MP3 and 32 kbit/s Opus are transparent for voice.
_SPECS: dict[str, _Spec] = {
    "mp3": _Spec(
        muxer="mp3",
        codec="libmp3lame",
        mime_type="audio/mpeg",
        bit_rate=64_000,
        rates_hz=(8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000),
        muxer_options={"id3v2_version": "0", "write_xing": "0"},
    ),
    "opus": _Spec(
        muxer="ogg",
        codec="libopus",
        mime_type="audio/ogg",
        bit_rate=32_000,
        rates_hz=(48000,),
        muxer_options={"page_duration": str(round(OGG_PAGE_DURATION_S * 1_000_000))},
    ),
    "wav": _Spec(muxer="wav", codec="pcm_s16le", mime_type="audio/wav", bit_rate=None, rates_hz=None),
    # Raw samples, no header (RFC 2586's audio/L16 is big-endian; this is little-endian, as
    # OpenAI's Realtime API and WebRTC stacks send pcm16).
    "pcm16": _Spec(muxer="s16le", codec="pcm_s16le", mime_type="audio/pcm", bit_rate=None, rates_hz=None),
}


class _Sink:
    """A write-only byte sink. Having no ``seek`` makes PyAV open it as a non-seekable output."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def drain(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


class AudioEncoder:
    """Encode mono float32 PCM at ``sample_rate_hz`` into one ``format`` file, incrementally.

    Args:
        format: ``"mp3"``, ``"opus"`` (Ogg Opus), ``"wav"`` (16-bit PCM) or ``"pcm16"`` (raw
            16-bit PCM, no header).
        sample_rate_hz: rate of the PCM given to :meth:`encode` (Hz), e.g. 22050 for espeak-ng or
            24000 for OpenAI's ``pcm``. MP3 keeps it when MPEG allows it (else the next allowed rate
            up), Opus always runs at 48 kHz, WAV keeps it.

    Raises:
        ValueError: unknown ``format`` or a non-positive ``sample_rate_hz``.
    """

    def __init__(self, format: OutputFormat, sample_rate_hz: int) -> None:
        spec = _SPECS.get(format)
        if spec is None:
            raise ValueError(f"unknown audio format {format!r}; expected one of {sorted(_SPECS)}")
        if sample_rate_hz <= 0:
            raise ValueError(f"sample_rate_hz must be positive, got {sample_rate_hz}")
        self._format: OutputFormat = format
        self._spec = spec
        self._input_rate = sample_rate_hz
        self._output_rate = _output_rate(spec, sample_rate_hz)
        self._sink = _Sink()
        self._container: av.container.OutputContainer = av.open(
            self._sink, mode="w", format=spec.muxer, options=dict(spec.muxer_options)
        )
        stream = self._container.add_stream(spec.codec, rate=self._output_rate, layout="mono")
        if not isinstance(stream, av.AudioStream):  # pragma: no cover - the codecs above are audio
            raise TypeError(f"{spec.codec} is not an audio codec")
        self._stream: av.AudioStream = stream
        if spec.bit_rate is not None:
            self._stream.bit_rate = spec.bit_rate
        self._time_base = Fraction(1, sample_rate_hz)
        self._pts = 0
        self._closed = False

    @property
    def format(self) -> OutputFormat:
        """The output format given to the constructor."""
        return self._format

    @property
    def mime_type(self) -> str:
        """MIME type of the output: ``audio/mpeg``, ``audio/ogg``, ``audio/wav`` or ``audio/pcm``."""
        return self._spec.mime_type

    @property
    def output_sample_rate_hz(self) -> int:
        """Sample rate of the encoded audio (Hz): 48000 for Opus, else see the class docstring."""
        return self._output_rate

    @property
    def samples_in(self) -> int:
        """Samples given to :meth:`encode` so far (at the input rate)."""
        return self._pts

    def encode(self, pcm: npt.NDArray[np.floating]) -> bytes:
        """Encode ``pcm`` (mono, shape ``(n,)``, floats in [-1, 1] at the input rate) and return
        the bytes ready so far (possibly ``b""``: codecs and Ogg pages buffer a little).

        Values outside [-1, 1] are clipped.

        Raises:
            ValueError: ``pcm`` is not one-dimensional.
            RuntimeError: the encoder was flushed or closed.
        """
        self._check_open()
        if pcm.ndim != 1:
            raise ValueError(f"pcm must be mono with shape (n,), got shape {pcm.shape}")
        if pcm.shape[0] == 0:
            return b""
        block = np.clip(pcm, -1.0, 1.0).astype(np.float32, copy=False).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format="flt", layout="mono")
        frame.sample_rate = self._input_rate
        frame.time_base = self._time_base
        frame.pts = self._pts
        self._pts += pcm.shape[0]
        self._container.mux(self._stream.encode(frame))
        return self._sink.drain()

    def flush(self) -> bytes:
        """Finish the file: drain the codec, write the trailer, return the last bytes.

        The encoder is closed afterwards.

        Raises:
            RuntimeError: the encoder was already flushed or closed.
        """
        self._check_open()
        self._container.mux(self._stream.encode(None))
        self._closed = True
        self._container.close()
        return self._sink.drain()

    def close(self) -> None:
        """Abandon the file (e.g. the client went away) and free the codec. Idempotent."""
        if not self._closed:
            self._closed = True
            self._container.close()
            self._sink.drain()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the audio encoder is already flushed or closed")


def _output_rate(spec: _Spec, rate_hz: int) -> int:
    if spec.rates_hz is None or rate_hz in spec.rates_hz:
        return rate_hz
    higher = [r for r in spec.rates_hz if r >= rate_hz]
    return min(higher) if higher else max(spec.rates_hz)
