"""The chat completions API's wire shapes: chat turns and tools out, streamed tool calls back in.

Turns become ``messages`` (the API's own roles, so the mapping is nearly one to one)::

    system / user / plain assistant turn → {"role", "content"}
    assistant turn with tool calls       → {"role": "assistant", "content": <text or None>,
                                            "tool_calls": [{"id", "type": "function",
                                                            "function": {"name", "arguments"}}]}
    tool turn                            → {"role": "tool", "tool_call_id", "content"}

A tool turn whose call is not in an earlier assistant turn of the same request (its call was
trimmed from the history) is dropped: the API refuses a ``tool`` message that does not answer a
preceding ``tool_calls``.

Tools become ``tools=[{"type": "function", "function": {"name", "description", "parameters"}}]``.

Streamed calls arrive as ``delta.tool_calls`` fragments keyed by ``index``; :class:`ToolCallAssembler`
puts them back together.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from openai.types.chat.chat_completion_chunk import ChoiceDeltaToolCall

from parley.providers.llm.base import ChatTurn, ToolCallRequest, ToolDefinition

__all__ = ["ToolCallAssembler", "chat_messages", "chat_tools", "new_call_id"]


def new_call_id() -> str:
    """An id for a call the server sent without one: ``call_`` and 32 hex digits (37 characters,
    within the ``[a-zA-Z0-9_-]{1,64}`` Bedrock and OpenAI accept)."""
    return f"call_{uuid.uuid4().hex}"


def chat_messages(turns: Sequence[ChatTurn]) -> list[dict[str, Any]]:
    """``turns`` as chat completions ``messages`` (see the module docstring for the shapes)."""
    messages: list[dict[str, Any]] = []
    called: set[str] = set()  # ids of the calls made by the assistant turns so far
    for turn in turns:
        if turn.role == "tool":
            if turn.tool_call_id in called:
                messages.append({"role": "tool", "tool_call_id": turn.tool_call_id, "content": turn.content})
        elif turn.role == "assistant" and turn.tool_calls:
            called.update(call.id for call in turn.tool_calls)
            messages.append(
                {
                    "role": "assistant",
                    "content": turn.content or None,
                    "tool_calls": [
                        {
                            "id": call.id,
                            "type": "function",
                            "function": {"name": call.name, "arguments": call.arguments},
                        }
                        for call in turn.tool_calls
                    ],
                }
            )
        else:
            messages.append({"role": turn.role, "content": turn.content})
    return messages


def chat_tools(tools: Sequence[ToolDefinition]) -> list[dict[str, Any]]:
    """``tools`` as the chat completions ``tools`` parameter (function tools)."""
    return [
        {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description,
                "parameters": dict(tool.parameters),
            },
        }
        for tool in tools
    ]


@dataclass
class _Partial:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ToolCallAssembler:
    """Streamed ``delta.tool_calls`` fragments → complete :class:`ToolCallRequest` values.

    OpenAI streams a call as fragments with the same ``index``: the first carries ``id``,
    ``type`` and ``function.name`` (arguments empty), the next ones only pieces of
    ``function.arguments``; fragments of several calls may interleave. ``id`` and ``name`` are
    taken from the first fragment that has them (some servers repeat them on every fragment);
    argument pieces are concatenated in arrival order. A fragment without ``index`` (a few
    compatible servers send each call whole, unindexed) starts a new call when it has an ``id``
    and continues the last one otherwise.
    """

    def __init__(self) -> None:
        self._calls: dict[int, _Partial] = {}

    def __bool__(self) -> bool:
        """Whether any fragment has arrived."""
        return bool(self._calls)

    def add(self, fragments: Iterable[ChoiceDeltaToolCall]) -> None:
        """Take the fragments of one chunk's ``delta.tool_calls``."""
        for fragment in fragments:
            index: int | None = fragment.index
            if not isinstance(index, int):  # the SDK does not validate chunks
                last = max(self._calls, default=-1)
                index = last + 1 if fragment.id or last < 0 else last
            partial = self._calls.setdefault(index, _Partial())
            if fragment.id and not partial.id:
                partial.id = fragment.id
            if fragment.function is not None:
                if fragment.function.name and not partial.name:
                    partial.name = fragment.function.name
                if fragment.function.arguments:
                    partial.arguments.append(fragment.function.arguments)

    def take(self) -> list[ToolCallRequest]:
        """The calls so far, in ``index`` order, and forget them. A call without an id gets
        :func:`new_call_id`; empty arguments become ``{}`` (a call without parameters)."""
        calls = [
            ToolCallRequest(partial.id or new_call_id(), partial.name, "".join(partial.arguments) or "{}")
            for _, partial in sorted(self._calls.items())
        ]
        self._calls.clear()
        return calls
