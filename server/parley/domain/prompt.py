"""The generation request of a reply: the agent's instructions, the history that fits the
model's context window (optionally with a running summary of what did not), and the agent's
tool definitions (docs/design.md, "Conversation model" and "Tools"); and, for providers that keep
the conversation themselves, where the turn sits in the tree (``Conversation``)."""

from __future__ import annotations

from collections.abc import Sequence

from parley.domain.context import build_context, counting
from parley.domain.models import Agent, Branch, Message, MessageStatus, Role
from parley.domain.summary import ContextSummarizer
from parley.domain.toolbox import Toolbox
from parley.providers.llm.base import Conversation, GenerationRequest
from parley.providers.llm.registry import ResolvedModel
from parley.storage.messages import RECENT_PATH_MESSAGES, MessageStore

__all__ = ["CONTEXT_MAX_MESSAGES", "Prompter", "conversation_of"]

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
        self,
        agent: Agent,
        resolved: ResolvedModel,
        user: Message,
        toolbox: Toolbox | None = None,
        *,
        branch: Branch | None = None,
        owner_id: str = "",
    ) -> tuple[GenerationRequest, int]:
        """The request for a reply to ``user`` and its input tokens (provider tokenizer).

        ``max_output_tokens`` is the agent's (else ``PARLEY_DEFAULT_MAX_OUTPUT_TOKENS``), capped
        at half the model's context window. With ``branch`` (the branch the reply goes to) the
        request carries its :func:`conversation_of`. Raises ``InvalidArgument``
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
        else:  # in a worker thread where counting blocks (the local model)
            turns, input_tokens = await counting(
                resolved.provider,
                build_context,
                resolved.provider,
                resolved.model,
                agent.instructions,
                [*history, user],
                max_output,
            )
        tools = tuple(toolbox.definitions) if toolbox is not None else ()
        conversation = (
            None
            if branch is None
            else conversation_of(branch, owner_id, user, history, resolved.qualified_name)
        )
        request = GenerationRequest(resolved.model, turns, max_output, agent.temperature, tools, conversation)
        return request, input_tokens


def conversation_of(
    branch: Branch, owner_id: str, user: Message, history: Sequence[Message], model: str
) -> Conversation:
    """Where a reply to ``user`` on ``branch`` sits. ``history`` is the path before ``user``
    (its newest part); ``continues`` is whether the branch's own part of it (after the fork
    point; all of it when the fork point is older than ``history``, none for a regenerate, whose
    fork point is ``user``) holds a reply of ``model`` (qualified name) with text or tool calls."""
    own: Sequence[Message] = history
    fork = branch.fork_point_id
    if fork == user.id:
        own = ()
    elif fork is not None:
        ids = [m.id for m in history]
        if fork in ids:
            own = history[ids.index(fork) + 1 :]
    continues = any(
        m.role is Role.ASSISTANT
        and m.model == model
        and m.status is not MessageStatus.FAILED
        and bool(m.text or m.tool_calls)
        for m in own
    )
    return Conversation(user.session_id, branch.id, fork, owner_id, continues)
