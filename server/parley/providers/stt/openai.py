"""Speech-to-text through the OpenAI transcription API (``POST /v1/audio/transcriptions``).

Works with OpenAI and with servers that implement the same endpoint (``base_url``). The audio is
sent as 16-bit WAV made from the decoded PCM, so what the provider hears is exactly what passed
Parley's own checks (type, duration cap).
"""

from __future__ import annotations

import asyncio

import openai
from openai import AsyncOpenAI

from parley.audio.decode import DecodedAudio
from parley.audio.encode import AudioEncoder
from parley.providers.openai_errors import map_openai_error
from parley.providers.stt.base import Transcription

__all__ = ["OpenAISpeechToText"]

#: Whisper's languages as code:name (``verbose_json`` reports the name, e.g. "arabic").
_WHISPER_LANGUAGES = (
    "en:english zh:chinese de:german es:spanish ru:russian ko:korean fr:french ja:japanese "
    "pt:portuguese tr:turkish pl:polish ca:catalan nl:dutch ar:arabic sv:swedish it:italian "
    "id:indonesian hi:hindi fi:finnish vi:vietnamese he:hebrew uk:ukrainian el:greek ms:malay "
    "cs:czech ro:romanian da:danish hu:hungarian ta:tamil no:norwegian th:thai ur:urdu hr:croatian "
    "bg:bulgarian lt:lithuanian la:latin mi:maori ml:malayalam cy:welsh sk:slovak te:telugu "
    "fa:persian lv:latvian bn:bengali sr:serbian az:azerbaijani sl:slovenian kn:kannada et:estonian "
    "mk:macedonian br:breton eu:basque is:icelandic hy:armenian ne:nepali mn:mongolian bs:bosnian "
    "kk:kazakh sq:albanian sw:swahili gl:galician mr:marathi pa:punjabi si:sinhala km:khmer sn:shona "
    "yo:yoruba so:somali af:afrikaans oc:occitan ka:georgian be:belarusian tg:tajik sd:sindhi "
    "gu:gujarati am:amharic yi:yiddish lo:lao uz:uzbek fo:faroese ps:pashto tk:turkmen nn:nynorsk "
    "mt:maltese sa:sanskrit lb:luxembourgish my:myanmar bo:tibetan tl:tagalog mg:malagasy "
    "as:assamese tt:tatar haw:hawaiian ln:lingala ha:hausa ba:bashkir jw:javanese su:sundanese "
    "yue:cantonese"
)
_WHISPER_LANGUAGE_CODES = dict(item.split(":", 1)[::-1] for item in _WHISPER_LANGUAGES.split())


def _wav_bytes(audio: DecodedAudio) -> bytes:
    encoder = AudioEncoder("wav", audio.sample_rate_hz)
    return encoder.encode(audio.samples) + encoder.flush()


class OpenAISpeechToText:
    """Transcribe through an OpenAI-compatible ``audio.transcriptions`` endpoint.

    Args:
        client: the ``AsyncOpenAI`` client (key, base URL, timeout and retries are its own;
            ``parley.providers.openai_client`` builds the one the server shares).
        model: ``"gpt-4o-mini-transcribe"``, ``"gpt-4o-transcribe"`` or ``"whisper-1"``. Only
            ``whisper-1`` reports the detected language (``verbose_json``); with the others the
            language is the hint, or ``""`` without one.
        owns_client: whether :meth:`aclose` closes ``client``.
    """

    name = "openai"

    def __init__(
        self, client: AsyncOpenAI, *, model: str = "gpt-4o-mini-transcribe", owns_client: bool = False
    ) -> None:
        self._client = client
        self._owns_client = owns_client
        self._model = model

    async def transcribe(self, audio: DecodedAudio, *, language: str | None) -> Transcription:
        """Transcribe ``audio``; ``language`` (ISO 639-1) is passed on as the provider's hint.

        Raises:
            ResourceExhausted, Unavailable, InvalidArgument: see
                :func:`parley.providers.openai_errors.map_openai_error`.
        """
        wav = await asyncio.to_thread(_wav_bytes, audio)
        upload = ("audio.wav", wav, "audio/wav")
        hint = language.split("-", 1)[0].lower() if language else None
        try:
            if self._model.startswith("whisper"):
                if hint:
                    verbose = await self._client.audio.transcriptions.create(
                        model=self._model, file=upload, response_format="verbose_json", language=hint
                    )
                else:
                    verbose = await self._client.audio.transcriptions.create(
                        model=self._model, file=upload, response_format="verbose_json"
                    )
                text, detected = verbose.text, _language_code(verbose.language)
            else:
                if hint:
                    plain = await self._client.audio.transcriptions.create(
                        model=self._model, file=upload, response_format="json", language=hint
                    )
                else:
                    plain = await self._client.audio.transcriptions.create(
                        model=self._model, file=upload, response_format="json"
                    )
                text, detected = plain.text, ""
        except openai.OpenAIError as exc:
            raise map_openai_error(exc) from exc
        return Transcription(text=text.strip(), language=hint or detected, duration_s=audio.duration_s)

    async def aclose(self) -> None:
        """Close the HTTP client if this provider created it."""
        if self._owns_client:
            await self._client.close()


def _language_code(name: str | None) -> str:
    """Whisper reports "arabic"; some compatible servers already report "ar"."""
    if not name:
        return ""
    name = name.strip().lower()
    if name in _WHISPER_LANGUAGE_CODES.values():
        return name
    return _WHISPER_LANGUAGE_CODES.get(name, "")
