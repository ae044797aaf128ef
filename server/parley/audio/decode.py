"""Decode uploaded audio to the PCM that speech-to-text wants: mono float32 at 16 kHz.

Decoding uses PyAV (FFmpeg). The demuxer is chosen from :func:`parley.audio.sniff.sniff`, never
by FFmpeg's own probing, so only the six accepted containers are ever parsed (FFmpeg's playlist
and concat demuxers, which can open other files or URLs, are unreachable).

Every call is CPU-bound and blocking: about 0.1 s (FLAC) to 0.5 s (Opus) per minute of audio,
measured on a busy 2-core machine. From async code run it with ``asyncio.to_thread``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import av
import av.error
import numpy as np
import numpy.typing as npt

from parley.audio.sniff import AudioType, sniff
from parley.domain.errors import InvalidArgument, Reason

__all__ = ["WHISPER_SAMPLE_RATE_HZ", "DecodedAudio", "decode_to_pcm"]

#: The rate Whisper models were trained on (and faster-whisper expects): 16 kHz.
WHISPER_SAMPLE_RATE_HZ = 16_000

#: FFmpeg demuxer per accepted container (``ffmpeg -demuxers``; "mp4" selects mov/mp4/m4a).
_DEMUXER: Mapping[AudioType, str] = MappingProxyType(
    {
        AudioType.WAV: "wav",
        AudioType.MP3: "mp3",
        AudioType.OGG: "ogg",
        AudioType.WEBM: "matroska",
        AudioType.M4A: "mp4",
        AudioType.FLAC: "flac",
    }
)

#: A file is called truncated when it decodes to less than its header declares by more than this
#: many seconds *and* this fraction of the declared duration. Legitimate differences (encoder
#: priming, Opus pre-skip, AAC padding) are a few tens of milliseconds.
_TRUNCATION_SLACK_S = 0.5
_TRUNCATION_SLACK_FRACTION = 0.1

#: MP3 frames that carry a frame count (so a declared duration that does not depend on the file
#: size): LAME/Xing "Xing" (VBR) or "Info" (CBR), Fraunhofer "VBRI". They sit in the first frame.
_MP3_LENGTH_TAGS = (b"Xing", b"Info", b"VBRI")
_MP3_FIRST_FRAME_WINDOW = 192

#: Matroska/WebM: the first Cluster element's ID, and how far to look for the header elements.
_WEBM_CLUSTER_ID = b"\x1f\x43\xb6\x75"
_WEBM_HEADER_WINDOW = 64 * 1024


@dataclass(frozen=True, slots=True, eq=False)
class DecodedAudio:
    """Mono PCM.

    Attributes:
        samples: float32 samples in [-1.0, 1.0], shape ``(n,)``.
        sample_rate_hz: samples per second (Hz).
    """

    samples: npt.NDArray[np.float32]
    sample_rate_hz: int

    @property
    def duration_s(self) -> float:
        """Length in seconds: ``len(samples) / sample_rate_hz``."""
        return float(self.samples.shape[0]) / self.sample_rate_hz


def decode_to_pcm(
    data: bytes, *, max_duration_s: float, sample_rate_hz: int = WHISPER_SAMPLE_RATE_HZ
) -> DecodedAudio:
    """Decode a whole audio file (``data``, bytes) to mono float32 PCM at ``sample_rate_hz``.

    The first audio stream is decoded, down-mixed to mono and resampled (FFmpeg's swresample).
    The duration cap is enforced *while* decoding: as soon as more than ``max_duration_s``
    seconds have been decoded the call stops, so a small file that expands hugely (a few kB of
    FLAC can hold hours of silence) costs at most ``max_duration_s`` of work and memory
    (``max_duration_s * sample_rate_hz * 4`` bytes). The cap is the caller's (a setting), not
    this module's.

    A file whose header declares a duration (MP3 with a Xing/Info/VBRI frame, WebM with a
    Duration element, M4A's ``mvhd``, FLAC's STREAMINFO) but that decodes to clearly less (see
    ``_TRUNCATION_SLACK_*``) is treated as truncated. WAV and Ogg declare nothing that is
    independent of the file's size, so a cut-off WAV or Ogg file decodes to what is there (streaming
    WAV writers put placeholder sizes in the header, which FFmpeg rightly ignores).

    Args:
        data: the uploaded file, bytes.
        max_duration_s: longest accepted audio, seconds (> 0).
        sample_rate_hz: output rate, Hz (default 16 kHz, what Whisper expects).

    Returns:
        The samples, shape ``(n,)``, float32 in [-1, 1], with ``n >= 1``.

    Raises:
        InvalidArgument: reasons ``EMPTY_AUDIO`` (no bytes, or no samples decoded),
            ``UNSUPPORTED_AUDIO`` (not an accepted container, no audio stream, no decoder for its
            codec), ``AUDIO_TOO_LONG`` (more than ``max_duration_s``; metadata
            ``max_duration_s``), ``CORRUPT_AUDIO`` (the container or a packet cannot be decoded,
            or the file is truncated).
        ValueError: ``max_duration_s`` or ``sample_rate_hz`` is not positive (a caller's bug).
    """
    if not max_duration_s > 0:
        raise ValueError(f"max_duration_s must be positive, got {max_duration_s}")
    if sample_rate_hz <= 0:
        raise ValueError(f"sample_rate_hz must be positive, got {sample_rate_hz}")
    audio_type = sniff(data)
    try:
        container = av.open(io.BytesIO(data), mode="r", format=_DEMUXER[audio_type])
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise _corrupt(f"cannot read the {audio_type.value} container") from exc
    with container:
        if not container.streams.audio:
            raise InvalidArgument(
                f"the {audio_type.value} file has no audio stream",
                reason=Reason.UNSUPPORTED_AUDIO,
                metadata={"detected_type": audio_type.value},
            )
        stream = container.streams.audio[0]
        if stream.codec_context is None:  # FFmpeg has no decoder for this codec
            raise InvalidArgument(
                f"the {audio_type.value} file holds audio in a codec that cannot be decoded",
                reason=Reason.UNSUPPORTED_AUDIO,
                metadata={"detected_type": audio_type.value},
            )
        max_samples = math.floor(max_duration_s * sample_rate_hz)
        chunks: list[npt.NDArray[np.float32]] = []
        total = 0
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate_hz)
        source: tuple[str, str, int] | None = None
        try:
            for packet in container.demux(stream):
                for frame in packet.decode():
                    frame_format = (frame.format.name, frame.layout.name, frame.sample_rate)
                    if source is not None and frame_format != source:
                        # A mid-stream change (e.g. concatenated MP3s at different rates): drain the
                        # old resampler and start a new one; the output rate stays the same.
                        total = _append(chunks, resampler.resample(None), total, max_samples, max_duration_s)
                        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate_hz)
                    source = frame_format
                    total = _append(chunks, resampler.resample(frame), total, max_samples, max_duration_s)
            total = _append(chunks, resampler.resample(None), total, max_samples, max_duration_s)
        except av.error.FFmpegError as exc:
            raise _corrupt(f"the {audio_type.value} audio cannot be decoded") from exc
        declared_s = _declared_duration_s(container, stream, audio_type, data)
    decoded_s = total / sample_rate_hz
    if declared_s is not None and declared_s - decoded_s > max(
        _TRUNCATION_SLACK_S, _TRUNCATION_SLACK_FRACTION * declared_s
    ):
        raise _corrupt(
            f"the {audio_type.value} file is truncated or damaged: its header declares "
            f"{declared_s:.2f} s but only {decoded_s:.2f} s decode"
        )
    if total == 0:
        raise InvalidArgument("the audio contains no samples", reason=Reason.EMPTY_AUDIO)
    samples = np.concatenate(chunks) if len(chunks) > 1 else chunks[0].copy()
    np.clip(samples, -1.0, 1.0, out=samples)  # down-mixing and resampling can overshoot slightly
    return DecodedAudio(samples=samples, sample_rate_hz=sample_rate_hz)


def _append(
    chunks: list[npt.NDArray[np.float32]],
    frames: list[av.AudioFrame],
    total: int,
    max_samples: int,
    max_duration_s: float,
) -> int:
    """Add resampled ``frames`` (packed ``flt`` mono) to ``chunks``; return the new sample total."""
    for frame in frames:
        pcm = frame.to_ndarray().astype(np.float32, copy=False).reshape(-1)
        total += pcm.shape[0]
        if total > max_samples:
            raise InvalidArgument(
                f"the audio is longer than the limit of {max_duration_s:g} s",
                reason=Reason.AUDIO_TOO_LONG,
                metadata={"max_duration_s": f"{max_duration_s:g}"},
            )
        chunks.append(pcm)
    return total


def _declared_duration_s(
    container: av.container.InputContainer, stream: av.AudioStream, audio_type: AudioType, data: bytes
) -> float | None:
    """Duration (s) the header states independently of the file size, or None."""
    if audio_type in (AudioType.WAV, AudioType.OGG):
        return None  # FFmpeg derives these from the size / the last page: nothing to compare
    if audio_type is AudioType.MP3 and not _has_mp3_length_tag(data):
        return None  # FFmpeg estimated it from the bitrate and file size
    if audio_type is AudioType.WEBM and not _has_webm_duration(data):
        return None  # a live recording (MediaRecorder) has no Duration element
    if audio_type is AudioType.FLAC:
        if stream.duration is None or stream.time_base is None:
            return None  # STREAMINFO's total samples is 0 ("unknown")
        return float(stream.duration * stream.time_base)
    if container.duration is None or container.duration <= 0:
        return None
    return container.duration / av.time_base


def _has_mp3_length_tag(data: bytes) -> bool:
    """Whether the first MP3 frame (after any ID3v2 tag) is a Xing/Info/VBRI frame."""
    start = 0
    if data[:3] == b"ID3" and len(data) >= 10:
        # ID3v2 header: "ID3", version (2), flags (1), size (4, syncsafe: 7 bits per byte).
        size = (data[6] & 0x7F) << 21 | (data[7] & 0x7F) << 14 | (data[8] & 0x7F) << 7 | (data[9] & 0x7F)
        footer = 10 if data[5] & 0x10 else 0
        start = 10 + size + footer
    window = data[start : start + _MP3_FIRST_FRAME_WINDOW]
    return any(tag in window for tag in _MP3_LENGTH_TAGS)


def _has_webm_duration(data: bytes) -> bool:
    """Whether the Matroska Segment Info before the first Cluster has a Duration element.

    Duration is EBML ID 0x4489 with a 4- or 8-byte float (size byte 0x84 or 0x88).
    """
    cluster = data.find(_WEBM_CLUSTER_ID, 0, _WEBM_HEADER_WINDOW)
    header = data[: cluster if cluster >= 0 else _WEBM_HEADER_WINDOW]
    return b"\x44\x89\x84" in header or b"\x44\x89\x88" in header


def _corrupt(message: str) -> InvalidArgument:
    return InvalidArgument(message, reason=Reason.CORRUPT_AUDIO)
