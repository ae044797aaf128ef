"""Short clips through Whisper with a 15 s audio context instead of 30 s: half the time.

Whisper's encoder always reads 30 s of log-mel frames (3,000), padding a short clip with
silence; faster-whisper's ``transcribe`` does the same, so a 2 s question costs a full 30 s
encoder pass (about 0.8 s of the 0.9 s a transcription takes on 2 cores). CTranslate2's Whisper
accepts fewer frames, and Whisper's decoder attends only to the positions it gets: this is
whisper.cpp's ``--audio-ctx``. Measured on 2 cores (2026-12-03) on nine espeak-ng questions in
English and Arabic, 1.5-4.3 s long: 0.43 s instead of 0.83 s per clip at 15 s of context, and
the same English words as the full pass (``make bench``'s converse phase: nine turns, the same
transcripts, one better). Shorter contexts are faster still (10 s: 0.25 s) but less robust:
at 10 s one live question came out as "How many days are there with us?", at 3-5 s some
looped.

What keeps it honest: a clip goes this way only when it leaves at least
``MIN_PADDING_S`` of silence in the window (Whisper must see the speech end); the text is
checked as Whisper checks its own (a zlib compression ratio above 2.4 is a repetition loop;
no-speech probability above 0.6 with a low log-probability is silence), and a loop makes the
caller fall back to faster-whisper's full 30 s pass with its temperature fallbacks. Decoding is
greedy or beam search as configured, always without timestamps.

Everything here is CTranslate2's public Whisper API (``encode``, ``detect_language``,
``generate``) and faster-whisper's feature extractor and tokenizer, on the loaded
``faster_whisper.WhisperModel``.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["CONTEXT_FRAMES", "MIN_PADDING_S", "ShortForm", "fits", "looks_like_a_loop", "transcribe_short"]

#: Mel frames the encoder reads (100 per second): 15 s of audio context.
CONTEXT_FRAMES = 1500
#: Silence a clip must leave in the context (s), so Whisper hears the speech end (no loop).
MIN_PADDING_S = 2.0
_FRAMES_PER_SECOND = 100
_SAMPLE_RATE_HZ = 16_000
#: Whisper's own thresholds (openai/whisper ``transcribe``: compression_ratio_threshold,
#: no_speech_threshold, logprob_threshold).
COMPRESSION_RATIO_LIMIT = 2.4
NO_SPEECH_THRESHOLD = 0.6
LOG_PROB_THRESHOLD = -1.0


@dataclass(frozen=True, slots=True)
class ShortForm:
    """What a short-form pass heard: ``text`` (empty for silence) and ``language`` (ISO 639-1)."""

    text: str
    language: str


def fits(samples: npt.NDArray[np.float32]) -> bool:
    """Whether a clip (16 kHz mono) is short enough for the 15 s context (≤ 13 s of audio)."""
    return bool(samples.shape[0] / _SAMPLE_RATE_HZ <= CONTEXT_FRAMES / _FRAMES_PER_SECOND - MIN_PADDING_S)


def looks_like_a_loop(text: str) -> bool:
    """Whisper's test for a repetition loop: the text compresses more than 2.4 times with zlib."""
    data = text.encode("utf-8")
    return bool(data) and len(data) / len(zlib.compress(data)) > COMPRESSION_RATIO_LIMIT


def transcribe_short(
    model: Any,
    samples: npt.NDArray[np.float32],
    *,
    language: str | None,
    allowed: Sequence[str],
    beam_size: int,
    max_new_tokens: int,
) -> ShortForm | None:
    """Transcribe a clip for which :func:`fits` holds, with one encoder pass of 15 s.

    Args:
        model: a loaded ``faster_whisper.WhisperModel``.
        samples: 16 kHz mono float32 PCM.
        language: ISO 639-1 code, or None to detect it on the same encoder output: the likeliest
            of ``allowed`` (all of Whisper's languages when empty).
        allowed: languages detection may pick.
        beam_size: 1 is greedy decoding.
        max_new_tokens: cap on the tokens decoded.

    Returns:
        What was heard, or None when the text is a repetition loop (the caller then runs the
        full 30 s pass, whose temperature fallbacks deal with loops).
    """
    import ctranslate2
    from faster_whisper.tokenizer import Tokenizer

    features = model.feature_extractor(samples)[:, :CONTEXT_FRAMES]
    padded = np.zeros((1, features.shape[0], CONTEXT_FRAMES), dtype=np.float32)
    padded[0, :, : features.shape[1]] = features
    encoded = model.model.encode(ctranslate2.StorageView.from_array(padded))
    if language is None:
        language = _likeliest(model.model.detect_language(encoded)[0], allowed)
    tokenizer = Tokenizer(
        model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=language
    )
    prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
    result = model.model.generate(
        encoded,
        [prompt],
        beam_size=beam_size,
        max_length=len(prompt) + max_new_tokens,
        return_scores=True,
        return_no_speech_prob=True,
        suppress_blank=True,
    )[0]
    tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
    # CTranslate2's score is the log-probability over the length (length_penalty 1): an average.
    if result.no_speech_prob > NO_SPEECH_THRESHOLD and result.scores[0] < LOG_PROB_THRESHOLD:
        return ShortForm("", language)
    text = tokenizer.decode(tokens).strip()
    if looks_like_a_loop(text):
        return None
    return ShortForm(text, language)


def _likeliest(probabilities: Sequence[tuple[str, float]], allowed: Sequence[str]) -> str:
    """The likeliest language of ``[("<|en|>", p), ...]`` among ``allowed`` (any if empty)."""
    codes = [(token.strip("<|>"), p) for token, p in probabilities]
    candidates = [(code, p) for code, p in codes if not allowed or code in allowed]
    return max(candidates or codes, key=lambda item: item[1])[0]
