"""The Converse API's wire shapes: chat turns and tools as ``converse_stream`` arguments, and
ConverseStream events read back as provider events.

Requests (``ChatTurn`` → Converse ``system`` and ``messages``)::

    system turns                  → system: [{"text"}]  (empty ones dropped)
    user turn / plain assistant   → {"role", "content": [{"text"}]}
    assistant turn with calls     → {"role": "assistant", "content": [{"text"}?, {"toolUse":
                                       {"toolUseId", "name", "input": <JSON object>}}, ...]}
    tool turn                     → {"role": "user", "content": [{"toolResult":
                                       {"toolUseId", "content": [{"text"}]}}]}
    tools                         → toolConfig: {"tools": [{"toolSpec": {"name", "description"?,
                                       "inputSchema": {"json": <JSON Schema>}}}]}

Converse wants the conversation to start with a user message and the roles to alternate, so
leading assistant turns are dropped (their question was trimmed from the history), as are tool
turns whose call is not in an earlier assistant turn of the request (trimmed too). Consecutive
turns that land on one role make one message: two texts are joined with a blank line (after a
failed reply two user turns follow each other), other blocks are appended (the results of one
step's calls, and the user's next text after them, make one user message).

Decisions the API forces:

* ``toolUse.input`` is a JSON object while ``ToolCallRequest.arguments`` is the text the model
  wrote. Empty arguments are ``{}``. Arguments that are not a JSON object (malformed JSON, or an
  array or a string) are sent as ``{}``, and the raw text is kept in the message's text block,
  before its tool uses, as ``[the arguments of tool call <id> were not a JSON object: <text>]``,
  so the model still sees what it wrote.
* Tool results carry no ``status``: a ``ChatTurn`` has no error flag, and Bedrock documents
  ``status`` for Claude 3/4 and Nova models only. A failed call's result says so in its text.
* Converse refuses ``toolUse``/``toolResult`` blocks in a request without ``toolConfig``, and
  its ``toolChoice`` has no "none". So a request with no ``tools`` whose history holds tool
  steps (e.g. a last step that withholds tools to get an answer in words) sends them as text:
  a call as ``[called tool <name> with <arguments>]`` in the assistant's text, a result as
  ``[result of tool <name> (call <id>): <content>]`` in the user's.

Stream events (what botocore's ``EventStream`` yields, one single-key dict each), read by
:class:`ConverseStreamReader`::

    messageStart                                   (ignored)
    contentBlockDelta.delta.text                   → TextDeltaEvent
    contentBlockStart.start.toolUse {toolUseId, name}  a call opens at contentBlockIndex
    contentBlockDelta.delta.toolUse.input          a fragment of its arguments' JSON text
    contentBlockStop                               → ToolCallEvent (for a tool-use block)
    messageStop.stopReason                         → the stop reason (sent last)
    metadata.usage.inputTokens/outputTokens        → UsageEvent
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from parley.domain.models import StopReason
from parley.providers.llm.base import (
    ChatTurn,
    GenerationRequest,
    ProviderEvent,
    TextDeltaEvent,
    ToolCallEvent,
    ToolCallRequest,
    ToolDefinition,
)

__all__ = ["ConverseStreamReader", "converse_arguments", "tool_config", "tool_input"]


def _new_call_id() -> str:
    """An id for a tool-use block without one (the same form as the OpenAI provider's)."""
    return f"call_{uuid.uuid4().hex}"


def converse_arguments(request: GenerationRequest) -> dict[str, Any]:
    """The ``converse_stream`` arguments for ``request`` (see the module docstring)."""
    with_tools = bool(request.tools)
    system = [{"text": t.content} for t in request.turns if t.role == "system" and t.content]
    names: dict[str, str] = {}  # ids of the calls made so far → tool names
    messages: list[dict[str, Any]] = []
    for turn in request.turns:
        if turn.role == "system" or (not messages and turn.role == "assistant"):
            continue
        if turn.role == "tool" and turn.tool_call_id not in names:
            continue
        blocks = _blocks(turn, with_tools, names)
        role = "assistant" if turn.role == "assistant" else "user"
        if messages and messages[-1]["role"] == role:
            _merge(messages[-1]["content"], blocks)
        else:
            messages.append({"role": role, "content": blocks})
    inference: dict[str, Any] = {"maxTokens": request.max_output_tokens}
    if request.temperature is not None:
        inference["temperature"] = request.temperature
    arguments: dict[str, Any] = {"modelId": request.model, "messages": messages, "inferenceConfig": inference}
    if system:
        arguments["system"] = system
    if with_tools:
        arguments["toolConfig"] = tool_config(request.tools)
    return arguments


def tool_config(tools: Sequence[ToolDefinition]) -> dict[str, Any]:
    """``tools`` as Converse's ``toolConfig`` (an empty description is left out: Bedrock wants
    a non-empty one or none)."""
    specs: list[dict[str, Any]] = []
    for tool in tools:
        spec: dict[str, Any] = {"name": tool.name, "inputSchema": {"json": dict(tool.parameters)}}
        if tool.description:
            spec["description"] = tool.description
        specs.append({"toolSpec": spec})
    return {"tools": specs}


def tool_input(arguments: str) -> dict[str, Any] | None:
    """``arguments`` (JSON text) as a ``toolUse.input`` object: ``{}`` for blank text, ``None``
    when it is not a JSON object."""
    if not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _blocks(turn: ChatTurn, with_tools: bool, names: dict[str, str]) -> list[dict[str, Any]]:
    """The content blocks of one turn; records the ids of an assistant turn's calls in ``names``."""
    if turn.role == "tool":
        if with_tools:
            result = {"toolUseId": turn.tool_call_id, "content": [{"text": turn.content}]}
            return [{"toolResult": result}]
        name = names[turn.tool_call_id]
        return [{"text": f"[result of tool {name} (call {turn.tool_call_id}): {turn.content}]"}]
    if not turn.tool_calls:
        return [{"text": turn.content}]
    texts = [turn.content] if turn.content else []
    uses: list[dict[str, Any]] = []
    for call in turn.tool_calls:
        names[call.id] = call.name
        if not with_tools:
            texts.append(f"[called tool {call.name} with {call.arguments or '{}'}]")
            continue
        parsed = tool_input(call.arguments)
        if parsed is None:
            texts.append(f"[the arguments of tool call {call.id} were not a JSON object: {call.arguments}]")
        uses.append({"toolUse": {"toolUseId": call.id, "name": call.name, "input": parsed or {}}})
    return ([{"text": "\n\n".join(texts)}] if texts else []) + uses


def _merge(content: list[dict[str, Any]], blocks: list[dict[str, Any]]) -> None:
    """Append ``blocks`` to a message's ``content``, joining text that meets text."""
    if content and blocks and set(content[-1]) == set(blocks[0]) == {"text"}:
        content[-1] = {"text": content[-1]["text"] + "\n\n" + blocks[0]["text"]}
        blocks = blocks[1:]
    content.extend(blocks)


@dataclass
class _OpenCall:
    id: str
    name: str
    fragments: list[str] = field(default_factory=list)


@dataclass
class ConverseStreamReader:
    """Reads ConverseStream events one at a time (see the module docstring for the mapping).

    :meth:`read` returns the text and tool-call events an event gives; :meth:`stop_reason` and
    ``usage`` hold what ``messageStop`` and ``metadata`` said, for the caller to send last. A call is
    given at its block's ``contentBlockStop`` (arguments as the model wrote them, ``{}`` when it
    wrote none; a block without ``toolUseId`` gets a made-up ``call_<hex>`` id), so text and
    calls come in the model's own order: Claude writes its text first.
    """

    #: ``messageStop.stopReason`` → Parley's stop reason.
    stop_reasons: Mapping[str, StopReason]
    #: ``messageStop``'s reason, once it has arrived (mapped by ``stop_reasons``).
    message_stop: StopReason | None = None
    #: ``(input_tokens, output_tokens)``, once ``metadata`` has arrived.
    usage: tuple[int, int] | None = None
    #: Text and tool-input deltas so far (the output-token estimate when ``metadata`` is missing).
    chunks: int = 0
    #: Tool calls given so far.
    calls: int = 0
    _open: dict[int, _OpenCall] = field(default_factory=dict)

    def read(self, event: Mapping[str, Any]) -> list[ProviderEvent]:
        """The provider events of one stream event (often none)."""
        if "contentBlockStart" in event:
            block = event["contentBlockStart"]
            use = block.get("start", {}).get("toolUse")
            if use is not None:
                call_id = use.get("toolUseId") or _new_call_id()
                self._open[int(block.get("contentBlockIndex", 0))] = _OpenCall(call_id, use.get("name", ""))
        elif "contentBlockDelta" in event:
            block = event["contentBlockDelta"]
            delta = block.get("delta", {})
            if delta.get("text"):
                self.chunks += 1
                return [TextDeltaEvent(delta["text"])]
            call = self._open.get(int(block.get("contentBlockIndex", 0)))
            if call is not None and "toolUse" in delta:
                self.chunks += 1
                call.fragments.append(delta["toolUse"].get("input", ""))
        elif "contentBlockStop" in event:
            call = self._open.pop(int(event["contentBlockStop"].get("contentBlockIndex", 0)), None)
            if call is not None:
                self.calls += 1
                return [ToolCallEvent(ToolCallRequest(call.id, call.name, "".join(call.fragments) or "{}"))]
        elif "messageStop" in event:
            self.message_stop = self.stop_reasons.get(
                event["messageStop"].get("stopReason", ""), StopReason.END_TURN
            )
        elif "metadata" in event:
            counts = event["metadata"].get("usage", {})
            self.usage = (int(counts.get("inputTokens", 0)), int(counts.get("outputTokens", 0)))
        return []

    def stop_reason(self) -> StopReason | None:
        """The step's stop reason: ``TOOL_USE`` when calls were given and the model ended its
        turn, ``END_TURN`` for ``tool_use`` with no call (nothing to run), else ``messageStop``'s;
        ``None`` before ``messageStop``."""
        if self.calls and self.message_stop is StopReason.END_TURN:
            return StopReason.TOOL_USE
        if not self.calls and self.message_stop is StopReason.TOOL_USE:
            return StopReason.END_TURN
        return self.message_stop
