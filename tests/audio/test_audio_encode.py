"""AudioEncoder: chunked encodes concatenate into one file that PyAV (and sox) decode."""

from __future__ import annotations

import io
import shutil
import subprocess
import typing

import av
import numpy as np
import numpy.typing as npt
import pytest
from parley.audio.decode import decode_to_pcm
from parley.audio.encode import AudioEncoder, OutputFormat
from parley.audio.sniff import AudioType, sniff

FORMATS: tuple[OutputFormat, ...] = typing.get_args(OutputFormat)
#: The formats with a container (a file a decoder can probe); ``pcm16`` is raw samples.
FILE_FORMATS = tuple(fmt for fmt in FORMATS if fmt != "pcm16")
SNIFFED = {"mp3": AudioType.MP3, "opus": AudioType.OGG, "wav": AudioType.WAV}


def tone(seconds: float, rate: int, hz: float = 440.0) -> npt.NDArray[np.float32]:
    t = np.arange(round(seconds * rate)) / rate
    return (0.4 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def encode_in_chunks(encoder: AudioEncoder, pcm: npt.NDArray[np.float32], pieces: int) -> list[bytes]:
    out = [encoder.encode(chunk) for chunk in np.array_split(pcm, pieces)]
    out.append(encoder.flush())
    return out


def probe(data: bytes) -> tuple[str, int, float]:
    """(codec, sample rate, decoded seconds) according to PyAV."""
    with av.open(io.BytesIO(data), "r") as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return stream.codec_context.name, stream.rate, samples / stream.rate


@pytest.mark.parametrize("fmt", FILE_FORMATS)
@pytest.mark.parametrize("rate", [16000, 22050, 24000])
def test_chunked_output_is_one_valid_file(fmt: OutputFormat, rate: int) -> None:
    encoder = AudioEncoder(fmt, rate)
    pcm = tone(3.0, rate)
    parts = encode_in_chunks(encoder, pcm, pieces=6)
    data = b"".join(parts)
    codec, out_rate, seconds = probe(data)
    assert codec == {"mp3": "mp3float", "opus": "opus", "wav": "pcm_s16le"}[fmt]
    assert out_rate == encoder.output_sample_rate_hz
    assert seconds == pytest.approx(3.0, abs=0.1)  # MP3 adds encoder delay/padding (~50 ms)
    assert sniff(data) is SNIFFED[fmt]
    decoded = decode_to_pcm(data, max_duration_s=10)
    assert decoded.duration_s == pytest.approx(3.0, abs=0.1)


@pytest.mark.parametrize("fmt", FORMATS)
def test_bytes_leave_before_flush(fmt: OutputFormat) -> None:
    encoder = AudioEncoder(fmt, 22050)
    parts = encode_in_chunks(encoder, tone(3.0, 22050), pieces=6)
    before_flush = parts[:-1]
    assert sum(1 for part in before_flush if part) >= 4
    assert sum(map(len, before_flush)) > 0.6 * sum(map(len, parts))


def test_output_rates_and_mime_types() -> None:
    assert AudioEncoder("opus", 22050).output_sample_rate_hz == 48000
    assert AudioEncoder("mp3", 22050).output_sample_rate_hz == 22050
    assert AudioEncoder("mp3", 20000).output_sample_rate_hz == 22050  # next MPEG rate up
    assert AudioEncoder("wav", 22050).output_sample_rate_hz == 22050
    assert AudioEncoder("mp3", 16000).mime_type == "audio/mpeg"
    assert AudioEncoder("opus", 16000).mime_type == "audio/ogg"
    assert AudioEncoder("wav", 16000).mime_type == "audio/wav"


def test_wav_round_trip_is_exact_to_16_bits() -> None:
    pcm = tone(0.5, 16000)
    encoder = AudioEncoder("wav", 16000)
    data = encoder.encode(pcm) + encoder.flush()
    decoded = decode_to_pcm(data, max_duration_s=10)
    assert decoded.samples.shape == pcm.shape
    assert float(np.max(np.abs(decoded.samples - pcm))) < 2 / 32768


def test_wav_header_is_a_streaming_header() -> None:
    encoder = AudioEncoder("wav", 16000)
    data = encoder.encode(tone(0.25, 16000)) + encoder.flush()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    assert data[4:8] == b"\xff\xff\xff\xff"  # unknown length: nothing is rewritten after streaming


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox is not installed")
def test_sox_reads_every_sample_of_the_streamed_wav() -> None:
    encoder = AudioEncoder("wav", 16000)
    data = b"".join(encode_in_chunks(encoder, tone(1.0, 16000), pieces=4))
    result = subprocess.run(
        ["sox", "-t", "wav", "-", "-n", "stat"], input=data, capture_output=True, check=True
    )
    assert "Samples read:             16000" in result.stderr.decode()


def test_clipping_and_dtypes() -> None:
    encoder = AudioEncoder("wav", 8000)
    loud = np.array([2.0, -3.0, 0.5], dtype=np.float64)
    data = encoder.encode(loud) + encoder.flush()
    decoded = decode_to_pcm(data, max_duration_s=1, sample_rate_hz=8000)
    assert decoded.samples == pytest.approx([32767 / 32768, -1.0, 0.5], abs=1e-4)


def test_empty_input_and_lifecycle() -> None:
    encoder = AudioEncoder("mp3", 24000)
    assert encoder.encode(np.zeros(0, dtype=np.float32)) == b""
    with pytest.raises(ValueError, match="mono"):
        encoder.encode(np.zeros((2, 10), dtype=np.float32))
    encoder.encode(tone(0.5, 24000))
    assert encoder.samples_in == 12000
    encoder.flush()
    with pytest.raises(RuntimeError):
        encoder.encode(tone(0.1, 24000))
    with pytest.raises(RuntimeError):
        encoder.flush()
    encoder.close()  # idempotent after flush


def test_close_abandons_without_error() -> None:
    encoder = AudioEncoder("opus", 24000)
    encoder.encode(tone(0.5, 24000))
    encoder.close()
    encoder.close()
    with pytest.raises(RuntimeError):
        encoder.encode(tone(0.1, 24000))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="format"):
        AudioEncoder(typing.cast(OutputFormat, "aac"), 16000)
    with pytest.raises(ValueError, match="sample_rate_hz"):
        AudioEncoder("wav", 0)


def test_speech_survives_every_format(speech_wav: bytes) -> None:
    speech = decode_to_pcm(speech_wav, max_duration_s=10, sample_rate_hz=22050)
    for fmt in FILE_FORMATS:
        encoder = AudioEncoder(fmt, 22050)
        data = b"".join(encode_in_chunks(encoder, speech.samples, pieces=3))
        again = decode_to_pcm(data, max_duration_s=10, sample_rate_hz=22050)
        assert again.duration_s == pytest.approx(speech.duration_s, abs=0.1), fmt
        assert float(np.sqrt(np.mean(np.square(again.samples)))) > 0.02, fmt


@pytest.mark.parametrize("rate", [16000, 22050, 24000])
def test_pcm16_is_the_samples_themselves(rate: int) -> None:
    """Raw 16-bit little-endian mono at the input rate, no header: chunks are playable as they
    arrive, and joined they are exactly the input, quantized."""
    encoder = AudioEncoder("pcm16", rate)
    assert encoder.output_sample_rate_hz == rate and encoder.mime_type == "audio/pcm"
    pcm = tone(1.0, rate)
    data = b"".join(encode_in_chunks(encoder, pcm, pieces=5))
    samples = np.frombuffer(data, dtype="<i2")
    assert samples.shape[0] == pcm.shape[0]
    assert np.max(np.abs(samples / 32768.0 - pcm)) < 2e-4
