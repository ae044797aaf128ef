"""sniff(): the type comes from the bytes; anything but the six accepted containers is refused."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from parley.audio.sniff import AudioType, sniff
from parley.domain.errors import InvalidArgument

from tests.audio.audio_samples import pcm_file


def png_bytes() -> bytes:
    """A real 1x1 PNG."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("wav", AudioType.WAV),
        ("mp3", AudioType.MP3),
        ("ogg-opus", AudioType.OGG),
        ("ogg-vorbis", AudioType.OGG),
        ("flac", AudioType.FLAC),
        ("m4a", AudioType.M4A),
        ("webm", AudioType.WEBM),
    ],
)
def test_accepted_formats(speech_files: dict[str, bytes], name: str, expected: AudioType) -> None:
    assert sniff(speech_files[name]) is expected


def test_mp4_with_generic_brand_is_m4a() -> None:
    data = pcm_file(np.zeros((1, 8000), dtype=np.int16), 8000, "mp4", "aac")
    assert sniff(data) is AudioType.M4A


def test_empty_input() -> None:
    with pytest.raises(InvalidArgument) as caught:
        sniff(b"")
    assert caught.value.reason == "EMPTY_AUDIO"


@pytest.mark.parametrize(
    ("data", "detected"),
    [
        (png_bytes(), "image/png"),
        (b"hello, this is not audio at all\n", "text/plain"),
        (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "application/pdf"),
    ],
)
def test_other_content_is_refused_and_named(data: bytes, detected: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        sniff(data)
    assert caught.value.reason == "UNSUPPORTED_AUDIO"
    assert caught.value.metadata == {"detected_type": detected}
    assert detected in caught.value.message


def test_matroska_audio_is_not_in_the_list() -> None:
    data = pcm_file(np.zeros((1, 48000), dtype=np.int16), 48000, "matroska", "libopus")
    with pytest.raises(InvalidArgument) as caught:
        sniff(data)
    assert caught.value.reason == "UNSUPPORTED_AUDIO"
    assert caught.value.metadata["detected_type"] == "video/x-matroska"


def test_only_the_bytes_count(speech_files: dict[str, bytes]) -> None:
    # An MP3 with a PNG signature in front is a PNG; a PNG is never audio whatever it is called.
    assert sniff(speech_files["mp3"]) is AudioType.MP3
    with pytest.raises(InvalidArgument):
        sniff(png_bytes() + speech_files["mp3"])
