"""The provider interface: a chat request in, a normalized event stream out.

Every provider yields ``TextDeltaEvent``\\* then exactly one ``UsageEvent`` and one
``StopEvent`` (in that order) when generation ends normally. Closing the iterator early (client
cancel) must stop the underlying call promptly (within 1 s). Failures raise
``parley.domain.errors`` exceptions (``Unavailable``, ``ResourceExhausted``) with
``metadata["provider"]`` set.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from parley.domain.models import StopReason

__all__ = [
    "ChatTurn",
    "GenerationRequest",
    "LLMProvider",
    "ProviderEvent",
    "StopEvent",
    "TextDeltaEvent",
    "UsageEvent",
]


@dataclass(frozen=True, slots=True)
class ChatTurn:
    """One message of the prompt, in the OpenAI chat roles."""

    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """``model`` is the provider's own model id (the part after ``provider/``)."""

    model: str
    turns: Sequence[ChatTurn]
    max_output_tokens: int
    temperature: float | None = None


@dataclass(frozen=True, slots=True)
class TextDeltaEvent:
    text: str


@dataclass(frozen=True, slots=True)
class UsageEvent:
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class StopEvent:
    stop_reason: StopReason


ProviderEvent = TextDeltaEvent | UsageEvent | StopEvent


class LLMProvider(Protocol):
    """A source of streamed chat completions."""

    #: Registry name, the ``provider`` of ``provider/model``.
    name: str

    def context_window(self, model: str) -> int:
        """Total tokens (prompt + output) the model accepts."""
        ...

    def count_tokens(self, model: str, turns: Sequence[ChatTurn]) -> int:
        """Prompt tokens ``turns`` cost, with the model's tokenizer where known, else an estimate."""
        ...

    def stream(self, request: GenerationRequest) -> AsyncGenerator[ProviderEvent, None]:
        """Generate a reply; see the module docstring for the event contract."""
        ...

    async def close(self) -> None:
        """Release the model or client."""
        ...
