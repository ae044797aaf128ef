"""parley_client.audio without a server: WAV files read as 16 kHz mono PCM16 frames, the sample
rate conversion, real-time pacing, and WAV writing (the SDK's live-voice helpers)."""

from __future__ import annotations

import asyncio
import io
import struct
import time
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from parley_client.audio import (
    FRAME_SECONDS,
    RATE_HZ,
    Resampler,
    WavError,
    WavFile,
    convert_pcm16,
    paced,
    pcm16_frames,
    write_wav,
)

FRAME_BYTES = 640  # 20 ms at 16 kHz, 2 bytes a sample


def wav_bytes(samples: npt.NDArray[np.float64], rate: int, width: int = 2, channels: int = 1) -> bytes:
    """A WAV file of ``samples`` (floats in [-1, 1], shape (n,) or (n, channels))."""
    frames = samples.reshape(len(samples), channels)
    if width == 1:
        data = np.round(frames * 127 + 128).astype(np.uint8).tobytes()
    elif width == 3:
        ints = np.round(frames * (2**23 - 1)).astype("<i4").reshape(-1)
        data = b"".join(struct.pack("<i", v)[:3] for v in ints.tolist())
    else:
        data = np.round(frames * (2 ** (8 * width - 1) - 1)).astype(f"<i{width}").tobytes()
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(data)
    return out.getvalue()


def tone(hz: float, rate: int, seconds: float, amplitude: float = 0.5) -> npt.NDArray[np.float64]:
    return amplitude * np.sin(2 * np.pi * hz * np.arange(round(rate * seconds)) / rate)


def read_all(data: bytes, **frames_kw: float) -> tuple[list[bytes], npt.NDArray[np.float64]]:
    with WavFile(io.BytesIO(data)) as wav:
        frames = list(wav.frames(**frames_kw))
    return frames, np.frombuffer(b"".join(frames), dtype="<i2").astype(np.float64) / 32768


def peak_hz(samples: npt.NDArray[np.float64], rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


def rms(samples: npt.NDArray[np.float64]) -> float:
    return float(np.sqrt(np.mean(samples**2)))


def test_16k_mono_pcm16_is_framed_unchanged_with_the_last_frame_padded_and_silence_after() -> None:
    samples = (np.arange(16_160) % 2000 - 1000).astype("<i2")  # 1.01 s: 50.5 frames
    data = io.BytesIO()
    with wave.open(data, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE_HZ)
        w.writeframes(samples.tobytes())
    frames, _ = read_all(data.getvalue(), trailing_silence_s=1.0)
    assert all(len(f) == FRAME_BYTES for f in frames)
    assert len(frames) == 51 + 50
    joined = b"".join(frames)
    assert joined[: samples.nbytes] == samples.tobytes()  # bit-exact: no conversion at 16 kHz
    assert joined[samples.nbytes :] == bytes(len(joined) - samples.nbytes)


@pytest.mark.parametrize(("rate", "channels"), [(22050, 1), (44100, 2), (48000, 1), (8000, 1), (11025, 2)])
def test_other_rates_and_channels_become_16k_mono_at_the_same_pitch(rate: int, channels: int) -> None:
    left = tone(440, rate, 1.0)
    samples = np.stack([left] * channels, axis=1) if channels > 1 else left
    _, out = read_all(wav_bytes(samples, rate, channels=channels))
    assert len(out) == -(-len(left) * RATE_HZ // rate // 320) * 320  # whole frames, no silence added
    expected = tone(440, RATE_HZ, 1.0)
    body = slice(400, 15_600)  # away from the filter's edges
    assert np.max(np.abs(out[body] - expected[body])) < 2e-3
    assert peak_hz(out[:16_000], RATE_HZ) == pytest.approx(440, abs=2)


def test_stereo_channels_are_averaged() -> None:
    left, right = tone(440, RATE_HZ, 0.5), tone(1000, RATE_HZ, 0.5, amplitude=0.25)
    _, out = read_all(wav_bytes(np.stack([left, right], axis=1), RATE_HZ, channels=2))
    assert np.max(np.abs(out[: len(left)] - (left + right) / 2)) < 1e-4


def test_frequencies_above_the_new_nyquist_are_removed_not_aliased() -> None:
    """A 10 kHz tone cannot exist at 16 kHz (Nyquist 8 kHz): naive decimation would fold it to
    6 kHz at full level."""
    _, out = read_all(wav_bytes(tone(10_000, 44_100, 1.0), 44_100))
    assert rms(out[400:-400]) < 1e-3 * rms(tone(10_000, 44_100, 1.0))
    _, kept = read_all(wav_bytes(tone(3_000, 44_100, 1.0), 44_100))  # well inside the band
    assert rms(kept[400:15_600]) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


@pytest.mark.parametrize("width", [1, 3, 4])
def test_8_24_and_32_bit_samples_read_like_16_bit(width: int) -> None:
    signal = tone(440, 22_050, 0.5)
    _, reference = read_all(wav_bytes(signal, 22_050, width=2))
    _, out = read_all(wav_bytes(signal, 22_050, width=width))
    tolerance = 1.5 / 128 if width == 1 else 1e-4  # 8-bit audio is itself that coarse
    assert np.max(np.abs(out - reference)) < tolerance


def test_a_header_with_placeholder_sizes_reads_to_the_end_of_the_data() -> None:
    """espeak-ng --stdout and other streaming writers leave 0x7ffff000-ish sizes in the header."""
    data = bytearray(wav_bytes(tone(440, 22_050, 0.5), 22_050))
    data[4:8] = struct.pack("<I", 0x7FFFF024)
    data[40:44] = struct.pack("<I", 0x7FFFF000)
    _, out = read_all(bytes(data))
    assert len(out) == 8000  # 0.5 s at 16 kHz: 25 whole frames


def test_resampler_fed_in_pieces_equals_one_go() -> None:
    signal = tone(700, 22_050, 0.3) + tone(3_100, 22_050, 0.3, 0.2)
    whole = Resampler(22_050, RATE_HZ)
    one_go = list(whole.feed(signal.tolist())) + list(whole.finish())
    pieces = Resampler(22_050, RATE_HZ)
    parts: list[float] = []
    for start in range(0, len(signal), 337):
        parts.extend(pieces.feed(signal[start : start + 337].tolist()))
    parts.extend(pieces.finish())
    assert len(one_go) == len(parts) == -(-len(signal) * 16_000 // 22_050)
    assert np.allclose(one_go, parts, atol=1e-12)


def test_files_it_cannot_read_are_refused_before_anything_is_sent(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        WavFile(tmp_path / "missing.wav")
    not_wav = tmp_path / "notes.txt"
    not_wav.write_text("hello, not a recording")
    with pytest.raises(WavError, match="not a PCM WAV file"):
        WavFile(not_wav)
    float_wav = bytearray(wav_bytes(tone(440, 16_000, 0.1), 16_000, width=4))
    float_wav[20:22] = struct.pack("<H", 3)  # WAVE_FORMAT_IEEE_FLOAT
    with pytest.raises(WavError, match="ffmpeg"):
        WavFile(io.BytesIO(bytes(float_wav)))


@pytest.mark.parametrize("frame_seconds", [0.0, 0.00001, 0.0201, 2.0])
def test_frames_must_be_whole_samples_within_the_servers_frame_limit(frame_seconds: float) -> None:
    with pytest.raises(ValueError, match="frame_seconds"):
        list(pcm16_frames([bytes(640)], frame_seconds=frame_seconds))


def test_convert_pcm16_and_write_wav_round_trip(tmp_path: Path) -> None:
    pcm = np.round(tone(440, 22_050, 0.4) * 32767).astype("<i2").tobytes()
    converted = convert_pcm16(pcm, 22_050, 24_000)
    assert len(converted) // 2 == -(-len(pcm) // 2 * 24_000 // 22_050)
    path = tmp_path / "reply.wav"
    write_wav(path, converted, 24_000)
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 24_000)
        assert w.readframes(w.getnframes()) == converted
    assert convert_pcm16(pcm, 16_000, 16_000) is pcm


async def test_paced_frames_keep_real_time_on_a_fixed_schedule() -> None:
    """25 frames of 20 ms take 0.48 s from the first to the last; a consumer that is late once
    catches up (the schedule does not drift) and no frame comes early."""
    started = time.monotonic()
    times: list[float] = []
    async for _ in paced([bytes(FRAME_BYTES)] * 25, frame_seconds=FRAME_SECONDS):
        times.append(time.monotonic() - started)
        if len(times) == 5:
            await asyncio.sleep(0.07)  # three and a half frames late
    assert len(times) == 25
    assert all(t >= k * FRAME_SECONDS - 0.002 for k, t in enumerate(times))
    assert times[-1] == pytest.approx(24 * FRAME_SECONDS, abs=0.04)
    assert times[5] - times[4] >= 0.07 and times[7] - times[5] < 0.01  # the late ones come at once
