"""The tools one reply may call: an agent's own (client and HTTP) and its MCP servers'.

A :class:`Toolbox` is made when a reply's run starts (:meth:`Toolboxes.for_agent`): MCP servers
are asked for their tools then (cached by ``parley.tools.mcp``; a server that is down offers
none, and the reply goes on without them). It tells the tool loop (``domain/turn.py``) what to
offer the model, who runs each call, which calls need an approval, and runs the server's own.
Every failure of a server-side tool is a result the model sees (``ToolOutcome.is_error``),
never an exception.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from parley.domain.models import Agent, McpServerConfig, ToolCall, ToolKind, ToolSpec
from parley.domain.tool_rules import MCP_NAME_SEPARATOR, mcp_tool_name
from parley.providers.llm.base import ToolDefinition
from parley.tools.base import ToolOutcome
from parley.tools.http import HttpToolRunner
from parley.tools.mcp import McpServerSpec, McpTools

__all__ = ["Toolbox", "Toolboxes"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Entry:
    definition: ToolDefinition
    kind: ToolKind
    require_approval: bool
    spec: ToolSpec | None = None
    server: McpServerConfig | None = None
    mcp_name: str = ""


class Toolbox:
    """The tools of one reply (see the module docstring)."""

    def __init__(self, entries: Sequence[_Entry], http: HttpToolRunner, mcp: McpTools) -> None:
        self._entries = {e.definition.name: e for e in entries}
        self._http = http
        self._mcp = mcp

    @property
    def definitions(self) -> list[ToolDefinition]:
        """What the model is offered."""
        return [e.definition for e in self._entries.values()]

    def __bool__(self) -> bool:
        return bool(self._entries)

    def call(self, id: str, name: str, arguments: str) -> ToolCall:
        """The call the model made, with who runs it and whether it needs an approval."""
        entry = self._entries.get(name)
        if entry is None:
            return ToolCall(id, name, arguments, ToolKind.UNKNOWN)
        return ToolCall(id, name, arguments, entry.kind, entry.require_approval)

    async def run(self, call: ToolCall) -> ToolOutcome:
        """Run a server-side call (HTTP or MCP); a result for any other."""
        entry = self._entries.get(call.name)
        if entry is None:
            known = ", ".join(self._entries) or "none"
            return ToolOutcome(f"there is no tool named {call.name!r} (tools: {known})", is_error=True)
        if entry.kind is ToolKind.HTTP and entry.spec is not None:
            return await self._http.call(entry.spec.url, entry.spec.headers, call.arguments)
        if entry.kind is ToolKind.MCP and entry.server is not None:
            return await self._mcp.call(_spec(entry.server), entry.mcp_name, call.arguments)
        return ToolOutcome(f"{call.name} is run by the client, not the server", is_error=True)


class Toolboxes:
    """Makes the :class:`Toolbox` of each reply; owns the HTTP and MCP clients."""

    def __init__(self, http: HttpToolRunner, mcp: McpTools) -> None:
        self._http = http
        self._mcp = mcp

    async def for_agent(self, agent: Agent) -> Toolbox:
        """The tools ``agent`` offers now: its own, then each MCP server's (allowed) tools."""
        entries = [
            _Entry(ToolDefinition(t.name, t.description, t.parameters), t.kind, t.require_approval, spec=t)
            for t in agent.tools
        ]
        taken = {t.name for t in agent.tools}
        for server in agent.mcp_servers:
            for tool in await self._mcp.list_tools(_spec(server)):
                name = mcp_tool_name(server.name, tool.name)
                if len(name) > 64 or name in taken or MCP_NAME_SEPARATOR in tool.name:
                    log.warning(
                        "MCP server %s: tool %r cannot be offered as %r", server.name, tool.name, name
                    )
                    continue
                taken.add(name)
                definition = ToolDefinition(name, tool.description, tool.parameters)
                entries.append(
                    _Entry(
                        definition, ToolKind.MCP, server.require_approval, server=server, mcp_name=tool.name
                    )
                )
        return Toolbox(entries, self._http, self._mcp)

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._mcp.aclose()


def _spec(server: McpServerConfig) -> McpServerSpec:
    return McpServerSpec(server.name, server.url, dict(server.headers), tuple(server.allowed_tools))
