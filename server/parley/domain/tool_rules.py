"""What an agent's tools and MCP servers must look like (checked at CreateAgent and UpdateAgent).

Names are what OpenAI's and Bedrock's function calling accept, ``[a-zA-Z0-9_-]{1,64}``, unique
across the agent; ``parameters`` must be a JSON Schema object schema (checked against the JSON
Schema meta-schema with the ``jsonschema`` library, as OpenAI requires ``"type": "object"``);
URLs are ``http(s)`` with a host. The server-side SSRF guard (``parley.tools.ssrf``) applies when
a tool is called, not here: an allowed host may change.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import jsonschema

from parley.domain.errors import InvalidArgument
from parley.domain.models import McpServerConfig, ToolSpec

__all__ = [
    "MAX_MCP_SERVERS",
    "MAX_TOOLS",
    "MCP_NAME_SEPARATOR",
    "check_mcp_servers",
    "check_tools",
    "mcp_tool_name",
]

#: At most this many tools and MCP servers per agent (OpenAI accepts up to 128 functions).
MAX_TOOLS = 64
MAX_MCP_SERVERS = 16
#: An MCP tool is offered to the model as ``{server}{MCP_NAME_SEPARATOR}{tool}``.
MCP_NAME_SEPARATOR = "__"
MAX_DESCRIPTION_CHARS = 4096
MAX_HEADERS = 32

_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_SERVER_NAME = re.compile(r"[a-zA-Z0-9_-]{1,32}")


def mcp_tool_name(server: str, tool: str) -> str:
    """The name the model calls MCP tool ``tool`` of ``server`` by."""
    return f"{server}{MCP_NAME_SEPARATOR}{tool}"


def _check_url(url: str, field: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgument.field(field, "must be an http:// or https:// URL with a host")
    return url.strip()


def _check_headers(headers: Mapping[str, str], field: str) -> dict[str, str]:
    if len(headers) > MAX_HEADERS:
        raise InvalidArgument.field(field, f"at most {MAX_HEADERS} headers")
    for name, value in headers.items():
        if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name) or any(c in value for c in "\r\n"):
            raise InvalidArgument.field(field, f"{name!r} is not a valid HTTP header")
    return dict(headers)


def _check_parameters(parameters: Mapping[str, Any], field: str) -> dict[str, Any]:
    schema = dict(parameters) or {"type": "object", "properties": {}}
    if schema.get("type") != "object":
        raise InvalidArgument.field(field, 'must be a JSON Schema object schema ({"type": "object", ...})')
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidArgument.field(field, f"not a valid JSON Schema: {exc.message}") from None
    return schema


def check_tools(tools: Sequence[ToolSpec]) -> tuple[ToolSpec, ...]:
    """``tools`` checked (see the module docstring); ``InvalidArgument`` naming the field."""
    if len(tools) > MAX_TOOLS:
        raise InvalidArgument.field("agent.tools", f"at most {MAX_TOOLS} tools")
    seen: set[str] = set()
    out = []
    for i, tool in enumerate(tools):
        field = f"agent.tools[{i}]"
        if not _TOOL_NAME.fullmatch(tool.name):
            raise InvalidArgument.field(f"{field}.name", "1 to 64 of a-z, A-Z, 0-9, '_' and '-'")
        if tool.name in seen:
            raise InvalidArgument.field(f"{field}.name", f"{tool.name!r} is used by another tool")
        seen.add(tool.name)
        if len(tool.description) > MAX_DESCRIPTION_CHARS:
            raise InvalidArgument.field(f"{field}.description", f"at most {MAX_DESCRIPTION_CHARS} characters")
        parameters = _check_parameters(tool.parameters, f"{field}.parameters")
        url, headers = tool.url, dict(tool.headers)
        if tool.kind.value == "http":
            url = _check_url(tool.url, f"{field}.http.url")
            headers = _check_headers(tool.headers, f"{field}.http.headers")
        elif tool.kind.value != "client":
            raise InvalidArgument.field(field, "must say who runs it: client or http")
        out.append(
            ToolSpec(tool.name, tool.description, parameters, tool.kind, tool.require_approval, url, headers)
        )
    return tuple(out)


def check_mcp_servers(
    servers: Sequence[McpServerConfig], tools: Sequence[ToolSpec]
) -> tuple[McpServerConfig, ...]:
    """``servers`` checked: names ``[a-zA-Z0-9_-]{1,32}`` unique, http(s) URLs, valid headers."""
    if len(servers) > MAX_MCP_SERVERS:
        raise InvalidArgument.field("agent.mcp_servers", f"at most {MAX_MCP_SERVERS} MCP servers")
    seen: set[str] = set()
    tool_names = {t.name for t in tools}
    out = []
    for i, server in enumerate(servers):
        field = f"agent.mcp_servers[{i}]"
        if not _SERVER_NAME.fullmatch(server.name) or MCP_NAME_SEPARATOR in server.name:
            raise InvalidArgument.field(
                f"{field}.name", "1 to 32 of a-z, A-Z, 0-9, '_' and '-', without '__'"
            )
        if server.name in seen:
            raise InvalidArgument.field(f"{field}.name", f"{server.name!r} is used by another MCP server")
        seen.add(server.name)
        clash = [n for n in tool_names if n.startswith(server.name + MCP_NAME_SEPARATOR)]
        if clash:
            raise InvalidArgument.field(f"{field}.name", f"tool {clash[0]!r} would clash with its tools")
        for name in server.allowed_tools:
            if not _TOOL_NAME.fullmatch(name):
                raise InvalidArgument.field(f"{field}.allowed_tools", f"{name!r} is not a tool name")
        out.append(
            McpServerConfig(
                server.name,
                _check_url(server.url, f"{field}.url"),
                _check_headers(server.headers, f"{field}.headers"),
                tuple(server.allowed_tools),
                server.require_approval,
            )
        )
    return tuple(out)
