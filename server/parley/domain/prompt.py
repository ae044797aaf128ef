"""The generation request of a reply: the agent's instructions, the history that fits the
model's context window (optionally with a running summary of what did not), and the agent's
tool definitions (docs/design.md, "Conversation model" and "Tools")."""

from __future__ import annotations

from collections.abc import Sequence

from parley.domain.context import build_context
from parley.domain.models import Agent, Message
from parley.domain.summary import ContextSummarizer
from parley.domain.toolbox import Toolbox
from parley.providers.llm.base import GenerationRequest
from parley.providers.llm.registry import ResolvedModel
from parley.storage.messages import RECENT_PATH_MESSAGES, MessageStore

__all__ = ["CONTEXT_MAX_MESSAGES", "Prompter"]

#: At most this many of the newest messages are read to build a context (then trimmed to fit).
CONTEXT_MAX_MESSAGES = RECENT_PATH_MESSAGES


class Prompter:
    """Builds the request for a reply to a user message that may not be stored yet."""

    def __init__(
        self,
        messages: MessageStore,
        *,
        default_max_output_tokens: int,
        summarizer: ContextSummarizer | None = None,
    ) -> None:
        self._messages = messages
        self._default_max_output = default_max_output_tokens
        self._summarizer = summarizer

    async def prompt(
        self, agent: Agent, resolved: ResolvedModel, user: Message, toolbox: Toolbox | None = None
    ) -> tuple[GenerationRequest, int]:
        """The request for a reply to ``user`` and its input tokens (provider tokenizer).

        ``max_output_tokens`` is the agent's (else ``PARLEY_DEFAULT_MAX_OUTPUT_TOKENS``), capped
        at half the model's context window. Raises ``InvalidArgument``
        (CONTEXT_WINDOW_EXCEEDED) when the instructions and ``user`` alone do not fit.
        """
        max_output = agent.max_output_tokens or self._default_max_output
        max_output = min(max_output, resolved.provider.context_window(resolved.model) // 2)
        history: Sequence[Message] = []
        if user.parent_id is not None:
            history = await self._messages.recent_path(
                user.session_id, user.parent_id, max(0, user.depth - CONTEXT_MAX_MESSAGES)
            )
        if self._summarizer is not None:  # PARLEY_CONTEXT_SUMMARY: trimmed history is summarized
            turns, input_tokens = await self._summarizer.build_context(
                resolved, user.session_id, agent.instructions, [*history, user], max_output
            )
        else:
            turns, input_tokens = build_context(
                resolved.provider, resolved.model, agent.instructions, [*history, user], max_output
            )
        tools = tuple(toolbox.definitions) if toolbox is not None else ()
        return GenerationRequest(resolved.model, turns, max_output, agent.temperature, tools), input_tokens
