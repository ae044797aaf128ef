"""espeak-ng text-to-speech, and the sentence → speech → encoder pipeline a voice reply uses."""

from __future__ import annotations

import asyncio
import shutil
import time

import numpy as np
import pytest
from parley.audio.decode import decode_to_pcm
from parley.audio.encode import AudioEncoder
from parley.audio.sentences import SentenceSplitter
from parley.domain.errors import InvalidArgument, Unavailable
from parley.providers.tts.base import SynthesizedAudio, TextToSpeech
from parley.providers.tts.espeak import EspeakTextToSpeech

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def loud_seconds(audio: SynthesizedAudio, threshold: float = 0.02) -> float:
    """Seconds of 10 ms windows whose RMS is above ``threshold`` (i.e. not silence)."""
    window = audio.sample_rate_hz // 100
    usable = audio.samples[: len(audio.samples) - len(audio.samples) % window].reshape(-1, window)
    rms = np.sqrt(np.mean(np.square(usable, dtype=np.float64), axis=1))
    return float(np.count_nonzero(rms > threshold)) / 100


@pytest.mark.parametrize(
    ("language", "text"),
    [("en", "The quick brown fox jumps over the lazy dog."), ("ar", "مرحبا، كيف حالك اليوم؟")],
)
async def test_speaks_english_and_arabic(language: str, text: str) -> None:
    tts: TextToSpeech = EspeakTextToSpeech()
    started = time.perf_counter()
    audio = await tts.synthesize(text, language=language, voice=None)
    elapsed = time.perf_counter() - started
    print(f"\nespeak {language}: {elapsed * 1000:.0f} ms for {audio.duration_s:.2f} s of audio")
    assert audio.sample_rate_hz == 22050
    assert audio.samples.dtype == np.float32
    assert audio.samples.ndim == 1
    assert audio.duration_s > 1.0
    assert loud_seconds(audio) > 0.5
    assert float(np.max(np.abs(audio.samples))) <= 1.0


async def test_variant_voice_changes_the_sound() -> None:
    tts = EspeakTextToSpeech()
    default = await tts.synthesize("Hello there.", language="en", voice=None)
    female = await tts.synthesize("Hello there.", language="en-US", voice="f3")
    full = await tts.synthesize("Hello there.", language="en", voice="en-us+f3")
    unknown = await tts.synthesize("Hello there.", language="en", voice="alloy")  # not a variant
    assert not np.array_equal(default.samples, female.samples)
    assert np.array_equal(female.samples, full.samples)
    assert np.array_equal(default.samples, unknown.samples)


async def test_empty_text_is_silence_without_a_process() -> None:
    audio = await EspeakTextToSpeech(executable="/nonexistent/espeak-ng").synthesize(
        " \n", language="en", voice=None
    )
    assert audio.samples.shape == (0,)


async def test_unknown_language() -> None:
    with pytest.raises(InvalidArgument) as caught:
        await EspeakTextToSpeech().synthesize("Hello.", language="xx", voice=None)
    assert caught.value.reason == "UNSUPPORTED_LANGUAGE"
    assert caught.value.metadata == {"language": "xx", "provider": "espeak"}
    with pytest.raises(InvalidArgument):
        await EspeakTextToSpeech().synthesize("Hello.", language="../../etc", voice=None)


async def test_missing_program_is_unavailable() -> None:
    tts = EspeakTextToSpeech(executable="/nonexistent/espeak-ng")
    with pytest.raises(Unavailable) as caught:
        await tts.synthesize("Hello.", language="en", voice=None)
    assert caught.value.reason == "PROVIDER_UNAVAILABLE"
    assert caught.value.metadata == {"provider": "espeak"}


async def test_text_goes_through_stdin_not_argv() -> None:
    # Text that looks like options is spoken, not interpreted.
    audio = await EspeakTextToSpeech().synthesize("--help -v xx --stdout", language="en", voice=None)
    assert loud_seconds(audio) > 0.3


async def test_concurrent_calls() -> None:
    tts = EspeakTextToSpeech(max_concurrency=2)
    results = await asyncio.gather(
        *(tts.synthesize(f"Sentence number {i}.", language="en", voice=None) for i in range(6))
    )
    assert all(loud_seconds(r) > 0.3 for r in results)


async def test_sentence_by_sentence_reply_is_one_playable_file() -> None:
    """LLM deltas → sentences → speech → one encoder: the bytes of every step form one file."""
    reply = "Hello! I am Parley. The answer is 3.14, more or less. مرحبا بك."
    deltas = [reply[i : i + 5] for i in range(0, len(reply), 5)]
    tts = EspeakTextToSpeech()
    splitter = SentenceSplitter()
    encoder = AudioEncoder("mp3", 22050)
    chunks: list[bytes] = []
    spoken = 0.0

    async def speak(sentence: str) -> None:
        nonlocal spoken
        language = "ar" if any("\u0600" <= c <= "\u06ff" for c in sentence) else "en"
        audio = await tts.synthesize(sentence, language=language, voice=None)
        spoken += audio.duration_s
        chunks.append(await asyncio.to_thread(encoder.encode, audio.samples))

    sentences: list[str] = []
    for delta in deltas:
        for sentence in splitter.feed(delta):
            sentences.append(sentence)
            await speak(sentence)
    if (rest := splitter.flush()) is not None:
        sentences.append(rest)
        await speak(rest)
    chunks.append(encoder.flush())

    assert sentences == ["Hello!", "I am Parley.", "The answer is 3.14, more or less.", "مرحبا بك."]
    assert sum(1 for chunk in chunks[:-1] if chunk) >= 3  # audio left with each sentence
    decoded = decode_to_pcm(b"".join(chunks), max_duration_s=60)
    assert decoded.duration_s == pytest.approx(spoken, abs=0.2)
