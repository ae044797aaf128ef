"""decode_to_pcm(): every accepted format to 16 kHz mono float32; bad input refused with a reason."""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
import wave

import numpy as np
import pytest
from parley.audio.decode import DecodedAudio, decode_to_pcm
from parley.domain.errors import InvalidArgument

from tests.audio.audio_samples import pcm_file


def noise(n: int) -> bytes:
    """``n`` pseudo-random bytes, the same on every run."""
    return np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8).tobytes()


#: espeak-ng's "The quick brown fox jumps over the lazy dog" lasts 2.91 s (64133 samples at 22.05 kHz).
SPEECH_S = 64133 / 22050


def rms(audio: DecodedAudio) -> float:
    return float(np.sqrt(np.mean(np.square(audio.samples, dtype=np.float64))))


def reason_of(data: bytes, max_duration_s: float = 60.0) -> str:
    with pytest.raises(InvalidArgument) as caught:
        decode_to_pcm(data, max_duration_s=max_duration_s)
    return caught.value.reason


@pytest.mark.parametrize("name", ["wav", "mp3", "ogg-opus", "ogg-vorbis", "flac", "m4a", "webm"])
def test_every_format_decodes_to_16k_mono_float32(speech_files: dict[str, bytes], name: str) -> None:
    audio = decode_to_pcm(speech_files[name], max_duration_s=60)
    assert audio.sample_rate_hz == 16000
    assert audio.samples.dtype == np.float32
    assert audio.samples.ndim == 1
    assert audio.duration_s == pytest.approx(SPEECH_S, abs=0.1)
    assert rms(audio) > 0.02
    assert float(np.max(np.abs(audio.samples))) <= 1.0


def test_other_output_rate(speech_files: dict[str, bytes]) -> None:
    audio = decode_to_pcm(speech_files["flac"], max_duration_s=60, sample_rate_hz=8000)
    assert audio.sample_rate_hz == 8000
    assert audio.samples.shape[0] == pytest.approx(SPEECH_S * 8000, abs=80)


def test_stereo_is_mixed_down_to_mono() -> None:
    t = np.arange(44100) / 44100
    left = (np.sin(2 * np.pi * 440 * t) * 12000).astype(np.int16)
    stereo = np.stack([left, left])
    audio = decode_to_pcm(pcm_file(stereo, 44100, "wav", "pcm_s16le"), max_duration_s=10)
    assert audio.samples.ndim == 1
    assert audio.duration_s == pytest.approx(1.0, abs=0.01)
    assert rms(audio) > 0.1


def test_too_long_is_refused(speech_files: dict[str, bytes]) -> None:
    with pytest.raises(InvalidArgument) as caught:
        decode_to_pcm(speech_files["mp3"], max_duration_s=1.5)
    assert caught.value.reason == "AUDIO_TOO_LONG"
    assert caught.value.metadata == {"max_duration_s": "1.5"}


def test_exactly_at_the_cap_is_accepted() -> None:
    audio = decode_to_pcm(
        pcm_file(np.zeros((1, 32000), dtype=np.int16), 16000, "wav", "pcm_s16le"), max_duration_s=2
    )
    assert audio.duration_s == 2.0


def test_the_cap_is_enforced_while_decoding() -> None:
    # 3 hours of 8 kHz digital silence is ~30 kB of FLAC (65535-sample constant frames) but would be
    # 3 h x 16000 x 4 B = 691 MB of float32. Refusing it must cost about the cap, not the file.
    hours = 3
    bomb = pcm_file(
        np.zeros((1, hours * 3600 * 8000), dtype=np.int16), 8000, "flac", "flac", {"frame_size": "65535"}
    )
    assert len(bomb) < 64 * 1024
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(InvalidArgument) as caught:
            decode_to_pcm(bomb, max_duration_s=30)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.reason == "AUDIO_TOO_LONG"
    assert peak < 16 * 1024 * 1024  # ~2 MB for the 30 s decoded before stopping (+ one frame)
    assert elapsed < 5.0  # a full decode takes tens of seconds and 691 MB


def test_wav_header_claiming_hours_decodes_what_is_there(speech_wav: bytes) -> None:
    # The header says 1 hour of data; the file holds 2.9 s. Neither the cap nor the truncation
    # check trusts WAV sizes (streaming writers put placeholders there).
    data_size = 3600 * 22050 * 2
    lying = (
        speech_wav[:4] + struct.pack("<I", data_size + 36) + speech_wav[8:40] + struct.pack("<I", data_size)
    )
    lying += speech_wav[44:]
    audio = decode_to_pcm(lying, max_duration_s=10)
    assert audio.duration_s == pytest.approx(SPEECH_S, abs=0.01)


@pytest.mark.parametrize("name", ["mp3", "flac", "m4a", "webm"])
def test_truncated_files_are_corrupt(speech_files: dict[str, bytes], name: str) -> None:
    data = speech_files[name]
    assert reason_of(data[: len(data) // 2]) == "CORRUPT_AUDIO"


def test_truncated_mp3_message_names_both_durations(speech_files: dict[str, bytes]) -> None:
    data = speech_files["mp3"]
    with pytest.raises(InvalidArgument) as caught:
        decode_to_pcm(data[: len(data) // 2], max_duration_s=60)
    assert "truncated or damaged" in caught.value.message
    assert "2.91 s" in caught.value.message


def test_wav_header_followed_by_garbage_is_corrupt() -> None:
    garbage = b"RIFF" + struct.pack("<I", 4000) + b"WAVE" + noise(4000)
    assert reason_of(garbage) == "CORRUPT_AUDIO"


def test_flac_header_followed_by_garbage_is_corrupt(speech_files: dict[str, bytes]) -> None:
    data = speech_files["flac"]
    assert reason_of(data[:200] + noise(len(data) - 200)) == "CORRUPT_AUDIO"


def test_mp3_header_followed_by_garbage_is_corrupt(speech_files: dict[str, bytes]) -> None:
    data = speech_files["mp3"]
    assert reason_of(data[:600] + noise(len(data) - 600)) == "CORRUPT_AUDIO"


def test_no_samples_is_empty() -> None:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(16000)
    assert reason_of(buf.getvalue()) == "EMPTY_AUDIO"


def test_empty_bytes_and_non_audio(speech_files: dict[str, bytes]) -> None:
    assert reason_of(b"") == "EMPTY_AUDIO"
    assert reason_of(b"just some text, definitely not audio\n") == "UNSUPPORTED_AUDIO"


def test_container_without_audio_stream_is_unsupported() -> None:
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="webm") as out:
        stream = out.add_stream("libvpx-vp9", rate=1) if "libvpx-vp9" in av.codecs_available else None
        if stream is None:
            pytest.skip("no VP9 encoder in this PyAV build")
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), dtype=np.uint8), format="rgb24")
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    with pytest.raises(InvalidArgument) as caught:
        decode_to_pcm(buf.getvalue(), max_duration_s=10)
    assert caught.value.reason == "UNSUPPORTED_AUDIO"


def test_codec_without_decoder_is_unsupported() -> None:
    data = bytes(32000)
    fmt = struct.pack("<HHIIHH", 0x0999, 1, 16000, 32000, 2, 16)  # WAVE format tag no one knows
    wav = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " + struct.pack("<I", 16) + fmt
    wav += b"data" + struct.pack("<I", len(data)) + data
    with pytest.raises(InvalidArgument) as caught:
        decode_to_pcm(wav, max_duration_s=10)
    assert caught.value.reason == "UNSUPPORTED_AUDIO"
    assert caught.value.metadata == {"detected_type": "wav"}


def test_bad_limits_are_a_programming_error(speech_wav: bytes) -> None:
    with pytest.raises(ValueError, match="max_duration_s"):
        decode_to_pcm(speech_wav, max_duration_s=0)
    with pytest.raises(ValueError, match="sample_rate_hz"):
        decode_to_pcm(speech_wav, max_duration_s=1, sample_rate_hz=0)
