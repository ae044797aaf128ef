"""Text-to-speech through the OpenAI speech API (``POST /v1/audio/speech``).

The response format is ``pcm``: raw 16-bit little-endian mono samples at 24 kHz (OpenAI's
documented format), so no decoding step is needed. Works with compatible servers via ``base_url``.
"""

from __future__ import annotations

import numpy as np
import openai
from openai import AsyncOpenAI

from parley.providers.openai_errors import map_openai_error
from parley.providers.tts.base import SynthesizedAudio

__all__ = ["OPENAI_PCM_SAMPLE_RATE_HZ", "OpenAITextToSpeech"]

#: Rate of the speech API's ``pcm`` response format (Hz), fixed by the API.
OPENAI_PCM_SAMPLE_RATE_HZ = 24_000


class OpenAITextToSpeech:
    """Synthesize with an OpenAI-compatible ``audio.speech`` endpoint.

    Args:
        client: the ``AsyncOpenAI`` client (key, base URL, timeout and retries are its own).
        model: e.g. ``"gpt-4o-mini-tts"`` or ``"tts-1"``.
        default_voice: used when a call passes no voice (OpenAI voices: alloy, ash, ballad, coral,
            echo, fable, nova, onyx, sage, shimmer, verse).
        owns_client: whether :meth:`aclose` closes ``client``.
    """

    name = "openai"

    def __init__(
        self,
        client: AsyncOpenAI,
        *,
        model: str = "gpt-4o-mini-tts",
        default_voice: str = "alloy",
        owns_client: bool = False,
    ) -> None:
        self._client = client
        self._owns_client = owns_client
        self._model = model
        self._default_voice = default_voice

    async def synthesize(self, text: str, *, language: str, voice: str | None) -> SynthesizedAudio:
        """Speak ``text`` (at most 4096 characters, the API's limit) and return 24 kHz mono samples.

        ``language`` is not sent: the API infers it from the text. Empty text gives zero samples
        without a request.

        Raises:
            ResourceExhausted, Unavailable, InvalidArgument: see
                :func:`parley.providers.openai_errors.map_openai_error`.
        """
        if not text.strip():
            return SynthesizedAudio(
                samples=np.zeros(0, dtype=np.float32), sample_rate_hz=OPENAI_PCM_SAMPLE_RATE_HZ
            )
        try:
            response = await self._client.audio.speech.create(
                model=self._model, voice=voice or self._default_voice, input=text, response_format="pcm"
            )
            data = response.content
        except openai.OpenAIError as exc:
            raise map_openai_error(exc) from exc
        usable = len(data) - len(data) % 2  # a dangling byte cannot be a sample
        pcm = np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / 32768.0
        return SynthesizedAudio(samples=pcm, sample_rate_hz=OPENAI_PCM_SAMPLE_RATE_HZ)

    async def aclose(self) -> None:
        """Close the HTTP client if this provider created it."""
        if self._owns_client:
            await self._client.close()
