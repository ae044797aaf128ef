"""The speech-to-text interface: decoded PCM in, a transcript with its language out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from parley.audio.decode import DecodedAudio

__all__ = ["SpeechToText", "Transcription"]


@dataclass(frozen=True, slots=True)
class Transcription:
    """What was said.

    Attributes:
        text: the transcript, stripped; ``""`` when nothing was recognized (silence, noise).
        language: the spoken language as a Whisper/ISO 639-1 code (``"en"``, ``"ar"``): the caller's
            hint when one was given, else the provider's detection; ``""`` when the provider
            reports none.
        duration_s: length of the transcribed audio, seconds.
    """

    text: str
    language: str
    duration_s: float


class SpeechToText(Protocol):
    """A transcriber. Failures raise ``parley.domain.errors`` exceptions with
    ``metadata["provider"]`` set: ``Unavailable`` (provider down), ``ResourceExhausted`` (provider
    rate limit), ``InvalidArgument`` (unsupported language hint, audio the provider refuses)."""

    #: ``PARLEY_STT_PROVIDER`` value that picks it (``local``, ``openai``): the metrics' label.
    name: str

    async def transcribe(self, audio: DecodedAudio, *, language: str | None) -> Transcription:
        """Transcribe ``audio`` (mono PCM; 16 kHz is what Whisper-family models expect).

        ``language`` is a hint (ISO 639-1, e.g. ``"ar"``); None means detect it.
        """
        ...

    async def aclose(self) -> None:
        """Release threads, clients and models. Called once, at server shutdown."""
        ...
