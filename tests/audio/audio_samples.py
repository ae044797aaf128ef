"""Helpers that make audio at test time (espeak-ng speech, PyAV encodes); no files are checked in."""

from __future__ import annotations

import io
import shutil
import subprocess
from fractions import Fraction

import av
import numpy as np
import numpy.typing as npt
import pytest

__all__ = ["FORMATS", "SENTENCE", "espeak_pcm16k", "espeak_wav", "opus_packets", "pcm_file", "transcode"]

SENTENCE = "The quick brown fox jumps over the lazy dog"

#: name → (muxer, codec, sample rate Hz, channel layout, codec options). FFmpeg's own Vorbis
#: encoder is "experimental" and stereo-only.
FORMATS: dict[str, tuple[str, str, int, str, dict[str, str]]] = {
    "mp3": ("mp3", "libmp3lame", 22050, "mono", {}),
    "ogg-opus": ("ogg", "libopus", 48000, "mono", {}),
    "ogg-vorbis": ("ogg", "vorbis", 22050, "stereo", {"strict": "-2"}),
    "flac": ("flac", "flac", 22050, "mono", {}),
    "m4a": ("ipod", "aac", 22050, "mono", {}),
    "webm": ("webm", "libopus", 48000, "mono", {}),
}


def espeak_wav(text: str, voice: str = "en-us") -> bytes:
    """espeak-ng's 22.05 kHz mono 16-bit WAV for ``text`` (its header has placeholder sizes)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    result = subprocess.run(
        ["espeak-ng", "-v", voice, "--stdout", "-b", "1", "--stdin"],
        input=text.encode(),
        capture_output=True,
        check=True,
    )
    return result.stdout


def transcode(
    data: bytes,
    muxer: str,
    codec: str,
    rate: int,
    layout: str = "mono",
    options: dict[str, str] | None = None,
) -> bytes:
    """Re-encode the first audio stream of ``data`` into ``muxer``/``codec`` at ``rate`` Hz."""
    out_buf = io.BytesIO()
    with av.open(io.BytesIO(data), "r") as source, av.open(out_buf, "w", format=muxer) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        assert isinstance(stream, av.AudioStream)
        stream.codec_context.options = dict(options or {})
        for frame in source.decode(audio=0):
            frame.pts = None
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return out_buf.getvalue()


def pcm_file(
    samples: npt.NDArray[np.int16], rate: int, muxer: str, codec: str, options: dict[str, str] | None = None
) -> bytes:
    """Encode int16 samples (shape (channels, n)) with PyAV, in 64k-sample frames."""
    layout = "mono" if samples.shape[0] == 1 else "stereo"
    out_buf = io.BytesIO()
    with av.open(out_buf, "w", format=muxer) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        assert isinstance(stream, av.AudioStream)
        stream.codec_context.options = dict(options or {})
        step = 65535 * 16
        for start in range(0, samples.shape[1], step):
            block = np.ascontiguousarray(samples[:, start : start + step])
            packed = block.T.reshape(1, -1) if layout == "stereo" else block
            frame = av.AudioFrame.from_ndarray(packed, format="s16", layout=layout)
            frame.sample_rate = rate
            frame.time_base = Fraction(1, rate)
            frame.pts = start
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return out_buf.getvalue()


def espeak_pcm16k(text: str, voice: str = "en-us") -> npt.NDArray[np.float32]:
    """espeak-ng speech for ``text`` as 16 kHz mono float32 (resampled by PyAV)."""
    from parley.audio.decode import decode_to_pcm

    return decode_to_pcm(espeak_wav(text, voice), max_duration_s=600).samples


def opus_packets(
    pcm: npt.NDArray[np.float32], rate: int, layout: str = "mono", frame_ms: int = 20
) -> list[bytes]:
    """Raw Opus packets (libopus, 48 kHz, ``frame_ms`` each, no container) of float32 ``pcm``.

    ``pcm`` has shape ``(n,)`` for mono or ``(2, n)`` for stereo, at ``rate`` Hz (resampled to 48 kHz
    first). This is what WebRTC or WebCodecs' AudioEncoder hand a client.
    """
    channels = 1 if layout == "mono" else 2
    planar = pcm.reshape(channels, -1)
    resampler = av.AudioResampler(format="flt", layout=layout, rate=48000)
    source = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(planar.T.reshape(1, -1)), format="flt", layout=layout
    )
    source.sample_rate = rate
    at_48k = [
        f.to_ndarray().reshape(-1, channels).T
        for f in [*resampler.resample(source), *resampler.resample(None)]
    ]
    audio = np.concatenate(at_48k, axis=1)
    encoder = av.CodecContext.create("libopus", "w")
    assert isinstance(encoder, av.AudioCodecContext)
    encoder.sample_rate, encoder.layout, encoder.format = 48000, layout, "flt"
    encoder.bit_rate = 32_000 * channels
    encoder.options = {"frame_duration": str(frame_ms)}
    encoder.open()
    step = 48 * frame_ms
    packets: list[bytes] = []
    for start in range(0, audio.shape[1], step):
        block = audio[:, start : start + step]
        block = np.pad(block, ((0, 0), (0, step - block.shape[1])))
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(block.T.reshape(1, -1), dtype=np.float32), format="flt", layout=layout
        )
        frame.sample_rate, frame.time_base, frame.pts = 48000, Fraction(1, 48000), start
        packets.extend(bytes(p) for p in encoder.encode(frame))
    packets.extend(bytes(p) for p in encoder.encode(None))
    return packets
