"""Model and speech providers, one interface each: ``llm``, ``stt``, ``tts``."""
