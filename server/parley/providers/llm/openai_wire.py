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

The streamed reply itself is read here, not by the SDK (which builds a pydantic model per chunk:
most of the CPU a token cost): :class:`EventStream` splits the Server-Sent Events of the
response body into the ``data`` of each event, and :data:`decode_chunk` decodes one with msgspec
into :class:`Chunk`, which has only the fields the provider reads (unknown fields are ignored).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from parley.providers.llm.base import ChatTurn, ToolCallRequest, ToolDefinition

__all__ = [
    "Chunk",
    "EventStream",
    "ToolCallAssembler",
    "ToolCallDelta",
    "ToolCallFragment",
    "chat_messages",
    "chat_tools",
    "decode_chunk",
    "new_call_id",
]


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


# --- the streamed reply -------------------------------------------------------------------------


class FunctionDelta(msgspec.Struct, gc=False):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(msgspec.Struct, gc=False):
    """One element of ``delta.tool_calls``."""

    index: int | None = None
    id: str | None = None
    function: FunctionDelta | None = None


class Delta(msgspec.Struct, gc=False):
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class Choice(msgspec.Struct, gc=False):
    delta: Delta | None = None
    finish_reason: str | None = None


class Usage(msgspec.Struct, gc=False):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class Chunk(msgspec.Struct, gc=False):
    """A ``chat.completion.chunk``, the fields Parley reads; ``error`` is what a server sends
    instead of a chunk when the generation fails mid-stream (``{"error": {"message": ...}}``)."""

    choices: list[Choice] | None = None
    usage: Usage | None = None
    error: Any = None


#: ``data`` of one event → :class:`Chunk`; raises ``msgspec.DecodeError`` (a ``ValueError``) when
#: it is not JSON or not a chunk's shape.
decode_chunk = msgspec.json.Decoder(Chunk).decode


class EventStream:
    """Server-Sent Events, fed as they are read, → the ``data`` of each complete event.

    As the SDK's decoder (and the SSE spec): lines end with LF, CRLF or CR; a blank line ends an
    event; its ``data`` lines are joined with LF; comments (``:``) and the other fields
    (``event``, ``id``, ``retry``) are ignored; an event with no ``data`` is none, and an
    unfinished one at the end of the body is dropped.
    """

    __slots__ = ("_data", "_skip_lf", "_tail")

    def __init__(self) -> None:
        self._tail = b""
        self._data: list[bytes] = []
        self._skip_lf = False  # the last piece ended with CR: a LF starting the next is its CRLF

    def feed(self, piece: bytes) -> list[bytes]:
        """The events ``piece`` completes, oldest first (``b"[DONE]"`` included as it comes)."""
        if self._skip_lf:
            self._skip_lf = False
            if piece[:1] == b"\n":
                piece = piece[1:]
        if b"\r" in piece:
            self._skip_lf = piece[-1:] == b"\r"
            piece = piece.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = (self._tail + piece if self._tail else piece).split(b"\n")
        self._tail = lines.pop()
        events: list[bytes] = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    events.append(data[0] if len(data) == 1 else b"\n".join(data))
                    data.clear()
            elif line[:5] == b"data:":
                data.append(line[6:] if line[5:6] == b" " else line[5:])
            elif line == b"data":
                data.append(b"")
        return events


# --- tool calls ----------------------------------------------------------------------------------


class _Function(Protocol):
    @property
    def name(self) -> str | None: ...

    @property
    def arguments(self) -> str | None: ...


class ToolCallFragment(Protocol):
    """What :class:`ToolCallAssembler` reads of a ``delta.tool_calls`` element (a
    :class:`ToolCallDelta`, or the SDK's ``ChoiceDeltaToolCall``)."""

    @property
    def index(self) -> int | None: ...

    @property
    def id(self) -> str | None: ...

    @property
    def function(self) -> _Function | None: ...


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

    def add(self, fragments: Iterable[ToolCallFragment]) -> None:
        """Take the fragments of one chunk's ``delta.tool_calls``."""
        for fragment in fragments:
            index = fragment.index
            if index is None:
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
