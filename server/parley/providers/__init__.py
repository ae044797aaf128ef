"""Model and speech providers, one interface each: ``llm``, ``stt``, ``tts``."""

#: Nothing is re-exported here: import from the submodules.
__all__: list[str] = []
