"""The provider interface: a chat request in, a normalized event stream out.

Every provider yields ``TextDeltaEvent``\\* and, when the request offers ``tools`` and the model
calls some, one ``ToolCallEvent`` per call (arguments complete), then exactly one ``UsageEvent``
and one ``StopEvent`` (in that order) when generation ends normally; a step that ends in tool
calls has stop reason ``TOOL_USE``. Closing the iterator early (client
cancel) must stop the underlying call promptly (within 1 s). Failures raise
``parley.domain.errors`` exceptions (``Unavailable``, ``ResourceExhausted``) with
``metadata["provider"]`` set.

Providers that keep the conversation themselves (Bedrock Agents) also read
``GenerationRequest.conversation``: where the turn sits in Parley's message tree. A provider
that returns sources (knowledge-base citations) puts them on the ``StopEvent``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from parley.domain.models import Citation, CitationSource, StopReason

__all__ = [
    "ChatTurn",
    "Citation",
    "CitationSource",
    "Conversation",
    "GenerationRequest",
    "LLMProvider",
    "ProviderEvent",
    "StopEvent",
    "TextDeltaEvent",
    "ToolCallEvent",
    "ToolCallRequest",
    "ToolDefinition",
    "UsageEvent",
]


@dataclass(frozen=True, slots=True)
class ToolDefinition:
    """A tool the model may call: ``parameters`` is a JSON Schema object (as OpenAI's function
    ``parameters`` and Bedrock's ``inputSchema.json``)."""

    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCallRequest:
    """A call the model asked for: ``id`` as the provider gave it (or one made up when it gave
    none), ``arguments`` the JSON text the model wrote (not validated: it may be malformed)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ChatTurn:
    """One message of the prompt, in the OpenAI chat roles. An ``assistant`` turn may carry the
    ``tool_calls`` it made (then ``content`` may be empty); a ``tool`` turn is the result of the
    call ``tool_call_id``."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: Sequence[ToolCallRequest] = ()
    tool_call_id: str = ""


@dataclass(frozen=True, slots=True)
class Conversation:
    """Where a request's turn sits in Parley's message tree (set by the chat engine for replies;
    None for other calls, such as summaries).

    ``continues`` is True when the path since the branch's fork point already holds a reply of
    this model with text (so a provider's own session for this branch has seen the path), False
    on the branch's first exchange with the model: a fork, an edit, a regenerate, or a first turn.
    """

    #: The Parley session, the branch the reply goes to, and the branch's fork point (None for a
    #: session's first branch and for empty branches).
    session_id: str
    branch_id: str
    fork_point_id: str | None
    #: The session's owner (the Parley user id).
    user_id: str
    continues: bool


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """``model`` is the provider's own model id (the part after ``provider/``)."""

    model: str
    turns: Sequence[ChatTurn]
    max_output_tokens: int
    temperature: float | None = None
    #: Tools the model may call in this step (empty: none).
    tools: Sequence[ToolDefinition] = ()
    #: The turn's place in the tree (see :class:`Conversation`).
    conversation: Conversation | None = None


@dataclass(frozen=True, slots=True)
class TextDeltaEvent:
    """Generated text. ``tokens``: how many streamed pieces it stands for (one, unless the
    provider merged pieces that arrived together; see ``openai.py``); consumers count output
    tokens by it, not by events."""

    text: str
    tokens: int = 1


@dataclass(frozen=True, slots=True)
class ToolCallEvent:
    """The model called a tool (the call's arguments are complete)."""

    call: ToolCallRequest


@dataclass(frozen=True, slots=True)
class UsageEvent:
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class StopEvent:
    stop_reason: StopReason
    #: Sources the reply cites (knowledge bases), in the order they came; empty for most providers.
    #: The domain's type (``parley.domain.models.Citation``), stored on the reply as given.
    citations: Sequence[Citation] = ()


ProviderEvent = TextDeltaEvent | ToolCallEvent | UsageEvent | StopEvent


class LLMProvider(Protocol):
    """A source of streamed chat completions."""

    #: Registry name, the ``provider`` of ``provider/model``.
    name: str

    def context_window(self, model: str) -> int:
        """Total tokens (prompt + output) the model accepts."""
        ...

    def supports_tools(self, model: str) -> bool:
        """Whether ``model`` can be offered tools (an agent with tools on a model that cannot
        call them is refused when it is created)."""
        ...

    def count_tokens(self, model: str, turns: Sequence[ChatTurn]) -> int:
        """Prompt tokens ``turns`` cost, with the model's tokenizer where known, else an estimate.

        Called on the event loop, so it must not block, unless the provider sets a class
        attribute ``count_tokens_blocks = True`` (the local model asks its engine process): then
        the prompt builder and the context summarizer call it from a worker thread
        (:func:`parley.domain.context.counting`)."""
        ...

    def stream(self, request: GenerationRequest) -> AsyncGenerator[ProviderEvent, None]:
        """Generate a reply; see the module docstring for the event contract."""
        ...

    async def close(self) -> None:
        """Release the model or client."""
        ...
