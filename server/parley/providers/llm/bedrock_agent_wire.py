"""InvokeAgent's wire shapes: a Parley turn as ``invoke_agent`` arguments, and the agent's
``completion`` event stream read back as provider events.

Requests (one ``invoke_agent`` call per model step)::

    agentId, agentAliasId        from the model name bedrock-agent/{agent_id}/{alias_id}
    sessionId                    see :func:`bedrock_session_id`
    memoryId                     the Parley user id, with PARLEY_BEDROCK_AGENT_MEMORY
    enableTrace                  False (no traces: no token counts either)
    streamingConfigurations      {"streamFinalResponse": True}: the answer streams as chunks
    inputText                    the newest user turn (the user turns after the last reply, joined
                                 by a blank line, when a failed reply left two in a row)
    sessionState.conversationHistory.messages
                                 the path before it, on a branch's first exchange only (the
                                 Converse message shapes of ``bedrock_wire``, tool steps as text)
    sessionState.invocationId, .returnControlInvocationResults
                                 instead of inputText, when the step answers a returnControl

Stream events (what botocore's ``EventStream`` yields; error events are raised by it as
``EventStreamError``)::

    chunk.bytes                          → TextDeltaEvent (UTF-8 text)
    chunk.attribution.citations[]        → Citation (kept for the StopEvent)
    returnControl {invocationId, invocationInputs[]}
                                         → one ToolCallEvent per input, stop reason TOOL_USE
    files, trace                         (ignored)

Tool calls. ``functionInvocationInput`` {actionGroup, function, parameters[{name, type,
value}]} is a call of the tool named ``function`` with the parameters as a JSON object (values
of type number, integer, boolean or array decoded from their text when they parse);
``apiInvocationInput`` {actionGroup, apiPath, httpMethod, parameters, requestBody} is a call of
the tool named ``actionGroup`` with ``{"apiPath", "httpMethod", "parameters": {...},
"requestBody": {<media type>: {...}}}``. The call's id is ``bra_`` + the base64url JSON of
``[invocationId, index, kind, actionGroup, function or apiPath, httpMethod]``, so the next step
can answer Bedrock from the tool turns alone (no state kept between steps, whichever replica runs
them): ``functionResult`` {actionGroup, function, responseBody: {"TEXT": {"body"}}} or
``apiResult`` {actionGroup, apiPath, httpMethod, httpStatusCode: 200, responseBody:
{"application/json": {"body"}}}.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from parley.domain.errors import FailedPrecondition, InvalidArgument, Reason
from parley.providers.llm.base import (
    ChatTurn,
    Citation,
    CitationSource,
    Conversation,
    GenerationRequest,
    ProviderEvent,
    TextDeltaEvent,
    ToolCallEvent,
    ToolCallRequest,
)
from parley.providers.llm.bedrock_wire import converse_arguments
from parley.providers.llm.hosted import estimate_text_tokens

__all__ = [
    "CALL_ID_PREFIX",
    "AgentStreamReader",
    "bedrock_session_id",
    "invoke_arguments",
    "parse_agent_model",
]

#: Tool-call ids made from a returnControl input start with this.
CALL_ID_PREFIX = "bra_"
_AGENT_ID = re.compile(r"[0-9a-zA-Z]{1,10}")
#: Parameter types whose text value is decoded as JSON (Bedrock sends every value as text).
_JSON_TYPES = frozenset({"number", "integer", "boolean", "array"})
#: Where a retrieved reference's location is, by location type (the first field present wins).
_LOCATION_FIELDS = (
    ("s3Location", "uri"),
    ("webLocation", "url"),
    ("confluenceLocation", "url"),
    ("salesforceLocation", "url"),
    ("sharePointLocation", "url"),
    ("kendraDocumentLocation", "uri"),
    ("customDocumentLocation", "id"),
    ("sqlLocation", "query"),
)


def parse_agent_model(model: str) -> tuple[str, str]:
    """``{agent_id}/{alias_id}`` (the part of ``bedrock-agent/...`` after the provider) as the
    pair; ``InvalidArgument`` (UNKNOWN_MODEL) unless both are 1-10 letters or digits, as Bedrock
    ids are."""
    agent_id, _, alias_id = model.partition("/")
    if not (_AGENT_ID.fullmatch(agent_id) and _AGENT_ID.fullmatch(alias_id)):
        raise InvalidArgument(
            f"model: bedrock-agent/{model} is not bedrock-agent/<agent id>/<alias id> "
            "(each 1-10 letters or digits, e.g. bedrock-agent/AGENT12345/TSTALIASID)",
            reason=Reason.UNKNOWN_MODEL,
            metadata={"field": "model", "model": f"bedrock-agent/{model}"},
        )
    return agent_id, alias_id


def bedrock_session_id(conversation: Conversation, model: str) -> str:
    """The Bedrock ``sessionId`` of a branch: ``parley-`` + 40 hex digits of the SHA-256 of
    (Parley session id, branch id, the branch's fork point, agent/alias). Stable along a branch;
    every fork, edit (a fork and a send) and regenerate makes a new branch, so a new Bedrock
    session (Bedrock's are linear)."""
    key = "\n".join(
        (conversation.session_id, conversation.branch_id, conversation.fork_point_id or "", model)
    )
    return "parley-" + hashlib.sha256(key.encode()).hexdigest()[:40]


def invoke_arguments(
    request: GenerationRequest, session_id: str, *, memory_id: str | None = None
) -> dict[str, Any]:
    """The ``invoke_agent`` arguments of one step (see the module docstring). A new Bedrock
    session (no ``request.conversation``, or its ``continues`` is False) is seeded with the
    path before the newest user turn."""
    agent_id, alias_id = parse_agent_model(request.model)
    arguments: dict[str, Any] = {
        "agentId": agent_id,
        "agentAliasId": alias_id,
        "sessionId": session_id,
        "enableTrace": False,
        "streamingConfigurations": {"streamFinalResponse": True},
    }
    if memory_id:
        arguments["memoryId"] = memory_id
    turns = [t for t in request.turns if t.role != "system"]
    results = _return_control_results(turns, agent_id)
    if results is not None:
        invocation_id, answers = results
        arguments["sessionState"] = {"invocationId": invocation_id, "returnControlInvocationResults": answers}
        return arguments
    split = len(turns)
    while split > 0 and turns[split - 1].role == "user":
        split -= 1
    arguments["inputText"] = "\n\n".join(t.content for t in turns[split:])
    seeded = request.conversation is None or not request.conversation.continues
    if seeded and split:
        history = converse_arguments(replace(request, turns=turns[:split], tools=()))["messages"]
        if history:
            arguments["sessionState"] = {"conversationHistory": {"messages": history}}
    return arguments


def _return_control_results(
    turns: Sequence[ChatTurn], agent_id: str
) -> tuple[str, list[dict[str, Any]]] | None:
    """The returnControl answers when ``turns`` end with tool results, else None."""
    start = len(turns)
    while start > 0 and turns[start - 1].role == "tool":
        start -= 1
    if start == len(turns):
        return None
    invocation_id = ""
    answers: list[dict[str, Any]] = []
    for turn in turns[start:]:
        decoded = _decode_call_id(turn.tool_call_id)
        if decoded is None:
            raise FailedPrecondition(
                f"Bedrock agent {agent_id}: tool result for {turn.tool_call_id!r}, a call the agent did "
                "not make (it answers only the calls of its own returnControl)",
                metadata={"provider": "bedrock-agent", "agent": agent_id},
            )
        invocation_id, _, kind, group, target, method = decoded
        body = turn.content
        if kind == "api":
            answers.append(
                {
                    "apiResult": {
                        "actionGroup": group,
                        "apiPath": target,
                        "httpMethod": method,
                        "httpStatusCode": 200,
                        "responseBody": {"application/json": {"body": body}},
                    }
                }
            )
        else:
            result = {"actionGroup": group, "function": target, "responseBody": {"TEXT": {"body": body}}}
            answers.append({"functionResult": result})
    return invocation_id, answers


def _encode_call_id(invocation_id: str, index: int, kind: str, group: str, target: str, method: str) -> str:
    raw = json.dumps([invocation_id, index, kind, group, target, method], separators=(",", ":"))
    return CALL_ID_PREFIX + base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_call_id(call_id: str) -> tuple[str, int, str, str, str, str] | None:
    if not call_id.startswith(CALL_ID_PREFIX):
        return None
    encoded = call_id[len(CALL_ID_PREFIX) :]
    try:
        value = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except (ValueError, binascii.Error):
        return None
    if not (isinstance(value, list) and len(value) == 6):
        return None
    invocation_id, index, kind, group, target, method = value
    return str(invocation_id), int(index), str(kind), str(group), str(target), str(method)


def _parameter_value(parameter: Mapping[str, Any]) -> Any:
    value = parameter.get("value", "")
    if str(parameter.get("type", "")).lower() in _JSON_TYPES:
        try:
            return json.loads(value)
        except (TypeError, ValueError):
            return value
    return value


def _parameters(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {str(p.get("name", "")): _parameter_value(p) for p in items}


def _tool_call(invocation_id: str, index: int, item: Mapping[str, Any]) -> ToolCallRequest:
    """One ``invocationInputs`` item as a tool call (see the module docstring)."""
    if "apiInvocationInput" in item:
        api = item["apiInvocationInput"]
        group, path, method = api.get("actionGroup", ""), api.get("apiPath", ""), api.get("httpMethod", "")
        arguments: dict[str, Any] = {"apiPath": path, "httpMethod": method}
        if api.get("parameters"):
            arguments["parameters"] = _parameters(api["parameters"])
        content = (api.get("requestBody") or {}).get("content") or {}
        if content:
            arguments["requestBody"] = {
                media: _parameters(body.get("properties", [])) for media, body in content.items()
            }
        call_id = _encode_call_id(invocation_id, index, "api", group, path, method)
        return ToolCallRequest(call_id, group, json.dumps(arguments))
    function = item.get("functionInvocationInput", {})
    group, name = function.get("actionGroup", ""), function.get("function", "")
    call_id = _encode_call_id(invocation_id, index, "function", group, name, "")
    return ToolCallRequest(call_id, name, json.dumps(_parameters(function.get("parameters", []))))


def _reference(reference: Mapping[str, Any]) -> CitationSource:
    content = reference.get("content") or {}
    location = reference.get("location") or {}
    where = ""
    for key, attribute in _LOCATION_FIELDS:
        if key in location:
            where = str(location[key].get(attribute, ""))
            break
    metadata = {
        str(k): v if isinstance(v, str) else json.dumps(v)
        for k, v in (reference.get("metadata") or {}).items()
    }
    return CitationSource(str(content.get("text", "")), where, str(location.get("type", "")), metadata)


def _citation(citation: Mapping[str, Any]) -> Citation:
    part = (citation.get("generatedResponsePart") or {}).get("textResponsePart") or {}
    span = part.get("span") or {}
    references = tuple(_reference(r) for r in citation.get("retrievedReferences") or [])
    return Citation(str(part.get("text", "")), int(span.get("start", 0)), int(span.get("end", 0)), references)


@dataclass
class AgentStreamReader:
    """Reads InvokeAgent ``completion`` events one at a time (see the module docstring).

    ``offered`` are the names of the tools the step offers: a returnControl input for another
    name is ``FailedPrecondition`` (reason FAILED_PRECONDITION) naming the tool and the agent, since Parley
    would have no one to run it.
    """

    agent_id: str
    offered: frozenset[str]
    citations: list[Citation] = field(default_factory=list)
    #: Output tokens estimated from the chunks so far (see ``hosted.py``).
    output_tokens: int = 0
    calls: int = 0

    def read(self, event: Mapping[str, Any]) -> list[ProviderEvent]:
        """The provider events of one stream event (often none)."""
        if "chunk" in event:
            chunk = event["chunk"]
            self.citations.extend(
                _citation(c) for c in (chunk.get("attribution") or {}).get("citations") or []
            )
            data = chunk.get("bytes") or b""
            text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else str(data)
            if not text:
                return []
            tokens = max(1, estimate_text_tokens(text))
            self.output_tokens += tokens
            return [TextDeltaEvent(text, tokens)]
        if "returnControl" in event:
            control = event["returnControl"]
            invocation_id = str(control.get("invocationId", ""))
            calls = [
                _tool_call(invocation_id, i, item)
                for i, item in enumerate(control.get("invocationInputs") or [])
            ]
            for call in calls:
                if call.name not in self.offered:
                    raise FailedPrecondition(
                        f"Bedrock agent {self.agent_id} returned control for {call.name!r}, which the Parley "
                        f"agent does not offer: give it a tool named {call.name!r} (a client tool, to run "
                        "it in your app)",
                        metadata={"provider": "bedrock-agent", "agent": self.agent_id, "tool": call.name},
                    )
            self.calls += len(calls)
            return [ToolCallEvent(call) for call in calls]
        return []
