"""The text-to-speech interface: text in, mono PCM out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

__all__ = ["SynthesizedAudio", "TextToSpeech"]


@dataclass(frozen=True, slots=True, eq=False)
class SynthesizedAudio:
    """Speech as mono PCM.

    Attributes:
        samples: float32 in [-1.0, 1.0], shape ``(n,)`` (``n`` may be 0 for empty text).
        sample_rate_hz: samples per second (Hz): 22050 for espeak-ng, 24000 for OpenAI ``pcm``.
    """

    samples: npt.NDArray[np.float32]
    sample_rate_hz: int

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return float(self.samples.shape[0]) / self.sample_rate_hz


class TextToSpeech(Protocol):
    """A speech synthesizer. Failures raise ``parley.domain.errors`` exceptions with
    ``metadata["provider"]`` set: ``Unavailable`` (engine missing or down), ``ResourceExhausted``
    (provider rate limit), ``InvalidArgument`` (input the provider refuses)."""

    #: ``PARLEY_TTS_PROVIDER`` value that picks it (``local``, ``openai``): the metrics' label.
    name: str

    async def synthesize(self, text: str, *, language: str, voice: str | None) -> SynthesizedAudio:
        """Speak ``text`` (typically one sentence) in ``language`` (ISO 639-1, e.g. ``"en"``,
        ``"ar"``) with ``voice`` (provider-specific name; None for the provider's default)."""
        ...

    async def aclose(self) -> None:
        """Release clients and processes. Called once, at server shutdown."""
        ...
