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

__all__ = ["FORMATS", "SENTENCE", "espeak_pcm16k", "espeak_wav", "pcm_file", "transcode"]

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

