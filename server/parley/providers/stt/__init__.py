"""Speech-to-text providers behind one interface (:class:`~parley.providers.stt.base.SpeechToText`).

* ``local``: faster-whisper with Whisper *base* (the embedded default, CPU, no network).
* ``openai``: the OpenAI transcription API (or any server speaking it, via ``base_url``).

The implementations import heavy libraries; import them from their modules.
"""

from parley.providers.stt.base import SpeechToText, Transcription

__all__ = ["SpeechToText", "Transcription"]
