"""FrameDecoder: live input frames (PCM16, raw Opus packets) to 16 kHz mono float32."""

from __future__ import annotations

import av
import numpy as np
import numpy.typing as npt
import pytest
from parley.audio.frames import FrameDecoder

from tests.audio.audio_samples import SENTENCE, espeak_pcm16k, opus_packets

RATE = 16_000
FRAME = 320  # 20 ms at 16 kHz


@pytest.fixture(scope="module")
def speech() -> npt.NDArray[np.float32]:
    return espeak_pcm16k(SENTENCE)


def envelope(pcm: npt.NDArray[np.float32], block: int = RATE // 10) -> npt.NDArray[np.float64]:
    """RMS per 100 ms."""
    blocks = pcm[: pcm.shape[0] // block * block].reshape(-1, block).astype(np.float64)
    return np.sqrt((blocks**2).mean(axis=1))


def whole_decode(packets: list[bytes]) -> npt.NDArray[np.float32]:
    """The packets decoded as one recording: all of libopus's 48 kHz output, resampled at once."""
    codec = av.CodecContext.create("libopus", "r")
    assert isinstance(codec, av.AudioCodecContext)
    codec.sample_rate, codec.layout = 48000, "mono"
    codec.open()
    decoded = [frame for p in packets for frame in codec.decode(av.Packet(p))]
    at_48k = np.concatenate([f.to_ndarray().reshape(-1) for f in decoded]).astype(np.float32) / 32768
    source = av.AudioFrame.from_ndarray(at_48k.reshape(1, -1), format="flt", layout="mono")
    source.sample_rate = 48000
    resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in resampler.resample(source)])


def test_pcm16_round_trip_is_exact() -> None:
    rng = np.random.default_rng(7)
    original = rng.integers(-32768, 32768, size=RATE, dtype=np.int16)
    original[:2] = (-32768, 32767)
    data = original.astype("<i2").tobytes()
    decoder = FrameDecoder("pcm16")
    pieces = [decoder.decode(data[i : i + 2 * FRAME]) for i in range(0, len(data), 2 * FRAME)]
    assert all(p.dtype == np.float32 and p.shape == (FRAME,) for p in pieces)
    decoded = np.concatenate(pieces)
    assert decoded.min() == -1.0 and decoded.max() < 1.0
    np.testing.assert_array_equal((decoded * 32768).astype(np.int16), original)
    assert decoder.decode(b"").shape == (0,)


def test_pcm16_odd_byte_count_is_refused() -> None:
    decoder = FrameDecoder("pcm16")
    decoder.decode(bytes(640))
    with pytest.raises(ValueError, match="input frame 1 has 641 bytes; PCM16 frames hold 2 bytes per sample"):
        decoder.decode(bytes(641))
    assert decoder.decode(bytes(4)).shape == (2,)  # still usable


@pytest.mark.parametrize("layout", ["mono", "stereo"])
def test_opus_packets_decode_frame_by_frame_like_one_recording(
    speech: npt.NDArray[np.float32], layout: str
) -> None:
    source = speech if layout == "mono" else np.stack([speech, 0.5 * speech])
    packets = opus_packets(source, RATE, layout)
    assert len(packets) > 100
    decoder = FrameDecoder("opus")
    pieces = [decoder.decode(p) for p in packets]
    decoder.close()
    decoded = np.concatenate(pieces)
    assert decoded.dtype == np.float32
    assert np.abs(decoded).max() <= 1.0
    # Same duration, within two 20 ms frames (the encoder pads the last frame).
    assert abs(decoded.shape[0] - speech.shape[0]) <= 2 * FRAME
    # Every packet yields its 20 ms (the first a little less: the resampler's filter delay).
    assert all(p.shape[0] == FRAME for p in pieces[1:])
    assert FRAME - 32 <= pieces[0].shape[0] < FRAME
    # Frame by frame is exactly the whole recording decoded at once: no gap, no click.
    if layout == "mono":
        np.testing.assert_array_equal(decoded, whole_decode(packets))
    # And it sounds like the input: the 100 ms loudness envelopes match (Opus delays by 6.5 ms).
    n = min(decoded.shape[0], speech.shape[0])
    original_env = envelope(speech[:n])
    decoded_env = envelope(decoded[:n])
    assert np.corrcoef(original_env, decoded_env)[0, 1] > 0.95
    expected = 1.0 if layout == "mono" else 0.75  # stereo down-mixes to the mean of the channels
    assert decoded_env.sum() / original_env.sum() == pytest.approx(expected, rel=0.15)


def test_opus_frames_of_other_sizes(speech: npt.NDArray[np.float32]) -> None:
    for frame_ms in (10, 60):
        decoder = FrameDecoder("opus")
        decoded = np.concatenate([decoder.decode(p) for p in opus_packets(speech, RATE, frame_ms=frame_ms)])
        assert abs(decoded.shape[0] - speech.shape[0]) <= 2 * frame_ms * RATE // 1000


@pytest.mark.parametrize(
    ("packet", "why"),
    [
        (b"\x03", "code 3 without its frame count byte"),
        (b"\x03\x00", "code 3 with zero frames"),
        (b"\xfb\xff\xff", "code 3 declaring 63 frames, over 120 ms"),
        (b"\x01" + bytes(999), "code 1 (two equal frames) with an odd payload"),
        (b"\x00" + bytes(1276), "code 0 with a frame over 1275 bytes"),
    ],
)
def test_malformed_opus_packet_is_refused(speech: npt.NDArray[np.float32], packet: bytes, why: str) -> None:
    packets = opus_packets(speech[:RATE], RATE)
    decoder = FrameDecoder("opus")
    decoder.decode(packets[0])
    with pytest.raises(
        ValueError, match=r"input frame 1 \(\d+ bytes\) is not a valid Opus packet: libopus says"
    ):
        decoder.decode(packet)
    assert decoder.decode(packets[1]).shape == (FRAME,), "the decoder is usable after a bad packet"


def test_empty_opus_frame_is_refused() -> None:
    with pytest.raises(ValueError, match="input frame 0 is empty; expected one Opus packet"):
        FrameDecoder("opus").decode(b"")


def test_unknown_format_and_closed_decoder() -> None:
    with pytest.raises(ValueError, match="unknown input format 'mp3'"):
        FrameDecoder("mp3")  # type: ignore[arg-type]
    decoder = FrameDecoder("opus")
    assert decoder.format == "opus"
    decoder.close()
    decoder.close()
    with pytest.raises(RuntimeError, match="closed"):
        decoder.decode(b"\xfc\xff\xfe")
