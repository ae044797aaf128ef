"""Text-to-speech providers behind one interface (:class:`~parley.providers.tts.base.TextToSpeech`).

* ``espeak``: the espeak-ng program (the embedded default, no network).
* ``openai``: the OpenAI speech API (or any server speaking it, via ``base_url``).
"""

from parley.providers.tts.base import SynthesizedAudio, TextToSpeech

__all__ = ["SynthesizedAudio", "TextToSpeech"]
