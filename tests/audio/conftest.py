"""Audio made at test time: espeak-ng speech as WAV, transcoded with PyAV to the other formats."""

from __future__ import annotations

import pytest

from tests.audio.audio_samples import FORMATS, SENTENCE, espeak_wav, transcode


@pytest.fixture(scope="session")
def speech_wav() -> bytes:
    return espeak_wav(SENTENCE)


@pytest.fixture(scope="session")
def speech_files(speech_wav: bytes) -> dict[str, bytes]:
    """The sentence in every accepted format: wav, mp3, ogg-opus, ogg-vorbis, flac, m4a, webm."""
    files = {"wav": speech_wav}
    for name, (muxer, codec, rate, layout, options) in FORMATS.items():
        files[name] = transcode(speech_wav, muxer, codec, rate, layout, options)
    return files
