"""Conversions of agents' tools, MCP servers and tool calls between the domain and protos.

Headers of HTTP tools and MCP servers are INPUT_ONLY secrets: they are read from requests and
never written into responses.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf import json_format, struct_pb2
from parley_proto.v1 import agent_service_pb2, chat_service_pb2

from parley.domain.errors import InvalidArgument, Reason
from parley.domain.models import McpServerConfig, ToolCall, ToolKind, ToolSpec
from parley.runs.events import ToolInputs

__all__ = [
    "mcp_servers_from_proto",
    "mcp_servers_to_proto",
    "tool_call_to_proto",
    "tool_inputs",
    "tools_from_proto",
    "tools_to_proto",
]

_KIND = {
    ToolKind.CLIENT: chat_service_pb2.ToolCall.KIND_CLIENT,
    ToolKind.HTTP: chat_service_pb2.ToolCall.KIND_HTTP,
    ToolKind.MCP: chat_service_pb2.ToolCall.KIND_MCP,
    ToolKind.UNKNOWN: chat_service_pb2.ToolCall.KIND_UNKNOWN,
}


def tool_inputs(request: chat_service_pb2.SubmitToolOutputsRequest) -> ToolInputs:
    """The outputs and approvals of a SubmitToolOutputs request; ``InvalidArgument`` for a call
    id given twice or empty."""
    ids = [o.tool_call_id for o in request.tool_outputs] + [a.tool_call_id for a in request.approvals]
    if "" in ids:
        raise InvalidArgument.field("tool_outputs.tool_call_id", "required", reason=Reason.MISSING_FIELD)
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise InvalidArgument.field("tool_outputs", f"answered more than once: {', '.join(twice)}")
    return ToolInputs(
        outputs={o.tool_call_id: (o.output, o.is_error) for o in request.tool_outputs},
        approvals={a.tool_call_id: (a.approved, a.reason) for a in request.approvals},
    )


def tool_call_to_proto(call: ToolCall) -> chat_service_pb2.ToolCall:
    return chat_service_pb2.ToolCall(
        id=call.id,
        name=call.name,
        arguments=call.arguments,
        kind=_KIND[call.kind],
        require_approval=call.require_approval,
    )


def tools_from_proto(tools: Sequence[agent_service_pb2.Tool]) -> tuple[ToolSpec, ...]:
    """Domain tools from an agent in a request (checked by ``domain.tool_rules``)."""
    out = []
    for i, tool in enumerate(tools):
        kind = tool.WhichOneof("kind")
        if kind is None:
            raise InvalidArgument.field(f"agent.tools[{i}]", "must say who runs it: set client or http")
        parameters = json_format.MessageToDict(tool.parameters) if tool.HasField("parameters") else {}
        out.append(
            ToolSpec(
                name=tool.name,
                description=tool.description,
                parameters=parameters,
                kind=ToolKind.HTTP if kind == "http" else ToolKind.CLIENT,
                require_approval=tool.require_approval,
                url=tool.http.url if kind == "http" else "",
                headers=dict(tool.http.headers) if kind == "http" else {},
            )
        )
    return tuple(out)


def tools_to_proto(tools: Sequence[ToolSpec]) -> list[agent_service_pb2.Tool]:
    out = []
    for tool in tools:
        parameters = struct_pb2.Struct()
        parameters.update(dict(tool.parameters))
        msg = agent_service_pb2.Tool(
            name=tool.name,
            description=tool.description,
            parameters=parameters,
            require_approval=tool.require_approval,
        )
        if tool.kind is ToolKind.HTTP:
            msg.http.url = tool.url  # headers: secrets, never returned
        else:
            msg.client.SetInParent()
        out.append(msg)
    return out


def mcp_servers_from_proto(servers: Sequence[agent_service_pb2.McpServer]) -> tuple[McpServerConfig, ...]:
    return tuple(
        McpServerConfig(s.name, s.url, dict(s.headers), tuple(s.allowed_tools), s.require_approval)
        for s in servers
    )


def mcp_servers_to_proto(servers: Sequence[McpServerConfig]) -> list[agent_service_pb2.McpServer]:
    return [
        agent_service_pb2.McpServer(
            name=s.name, url=s.url, allowed_tools=list(s.allowed_tools), require_approval=s.require_approval
        )
        for s in servers
    ]
