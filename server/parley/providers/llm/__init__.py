"""Language-model providers behind one streaming interface."""

from parley.providers.llm.base import (
    ChatTurn,
    GenerationRequest,
    LLMProvider,
    ProviderEvent,
    StopEvent,
    TextDeltaEvent,
    UsageEvent,
)
from parley.providers.llm.registry import ModelRegistry, ResolvedModel

__all__ = [
    "ChatTurn",
    "GenerationRequest",
    "LLMProvider",
    "ModelRegistry",
    "ProviderEvent",
    "ResolvedModel",
    "StopEvent",
    "TextDeltaEvent",
    "UsageEvent",
]
