"""Tools of MCP servers over streamable HTTP, through the official ``mcp`` SDK.

Each operation (a listing or a call) opens its own MCP session: an ``httpx2.AsyncClient`` on the
SSRF-guarded transport (``parley.tools.transport``) is handed to the SDK's
``streamable_http_client``, so every connection the SDK makes, redirects included, resolves once
and connects to an address the guard vetted (DNS rebinding is checked per connection, as for
HTTP tools). The SDK itself follows only same-origin redirects. One session per operation costs
a handshake (``server/discover``, or ``initialize`` with older servers) but holds nothing open
between turns, and no session outlives the task that opened it (the SDK's task groups require
that).

``timeout_s`` bounds each operation as a whole (connect, handshake, the request and its answer);
``ttl_s`` is how long a server's listing is reused.

A server that is down, refused, too slow or broken never raises here: :meth:`McpTools.call`
returns an ``is_error`` outcome, and :meth:`McpTools.list_tools` returns no tools and logs a
warning (a failure is not cached: the next listing asks again), so the turn goes on without that
server. Tool names are the server's own, with no server prefix: a caller offering tools of
several servers (or HTTP tools beside them) must keep names unique itself.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
import mcp_types
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client

import parley
from parley.providers.llm.base import ToolDefinition
from parley.tools.base import ToolOutcome
from parley.tools.ssrf import AddressGuard, ToolRefused
from parley.tools.transport import guarded_client

__all__ = ["MAX_LIST_PAGES", "McpServerSpec", "McpTools"]

log = logging.getLogger(__name__)

#: Pages of ``tools/list`` read per listing (a server that pages forever is cut off there).
MAX_LIST_PAGES = 20

_CLIENT_INFO = mcp_types.Implementation(name="parley", version=parley.__version__)


@dataclass(frozen=True, slots=True)
class McpServerSpec:
    """An MCP server an agent uses: ``name`` (for messages and logs), its streamable HTTP
    endpoint ``url``, the ``headers`` sent with every request (credentials, typically), and
    ``allowed_tools``: when non-empty, the only tools of the server offered and callable."""

    name: str
    url: str
    headers: Mapping[str, str]
    allowed_tools: Sequence[str] = ()


_CacheKey = tuple[str, tuple[tuple[str, str], ...]]


def _key(server: McpServerSpec) -> _CacheKey:
    return server.url, tuple(sorted(server.headers.items()))


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, innermost, in order."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _describe(server: McpServerSpec, exc: Exception, timeout_s: float) -> str:
    """What went wrong talking to ``server``, for the model and the logs."""
    leaves = _leaves(exc)
    refused = next((leaf for leaf in leaves if isinstance(leaf, ToolRefused)), None)
    if refused is not None:
        return f"the MCP server {server.name} was refused: {refused}"
    if any(isinstance(leaf, TimeoutError | httpx2.TimeoutException) for leaf in leaves):
        return f"the MCP server {server.name} did not answer within {timeout_s:g} s"
    leaf = leaves[0]
    if isinstance(leaf, MCPError):
        return f"the MCP server {server.name} answered with an error: {leaf.message} (code {leaf.code})"
    return f"the MCP server {server.name} could not be reached: {str(leaf) or type(leaf).__name__}"


def _text(content: Sequence[mcp_types.ContentBlock], structured: Any) -> str:
    """A call result's content as text: text blocks joined by newlines; other blocks named."""
    parts: list[str] = []
    for block in content:
        if isinstance(block, mcp_types.TextContent):
            parts.append(block.text)
        elif isinstance(block, mcp_types.EmbeddedResource):
            resource = block.resource
            if isinstance(resource, mcp_types.TextResourceContents):
                parts.append(resource.text)
            else:
                parts.append(f"[binary resource {resource.uri} omitted]")
        elif isinstance(block, mcp_types.ResourceLink):
            parts.append(f"[resource {block.uri}]")
        else:
            parts.append(f"[{block.type} content ({block.mime_type}) omitted]")
    if not parts and structured is not None:
        return json.dumps(structured, ensure_ascii=False)
    return "\n".join(parts)


class McpTools:
    """Lists and calls the tools of MCP servers; listings are cached per server URL and headers.

    ``ttl_s`` (seconds) is how long a listing is reused (0: never); ``timeout_s`` (seconds)
    bounds one listing or one call. Both come from the operator's tool settings.
    """

    def __init__(self, guard: AddressGuard, *, ttl_s: float, timeout_s: float) -> None:
        self._guard = guard
        self._ttl_s = ttl_s
        self._timeout_s = timeout_s
        #: Listing (all tools, unfiltered) and the monotonic time it expires, per server.
        self._listings: dict[_CacheKey, tuple[float, tuple[ToolDefinition, ...]]] = {}
        self._locks: dict[_CacheKey, anyio.Lock] = {}

    @asynccontextmanager
    async def _session(self, server: McpServerSpec) -> AsyncIterator[Client]:
        self._guard.check_url(server.url)
        with anyio.fail_after(self._timeout_s):
            async with (
                guarded_client(self._guard, timeout_s=self._timeout_s, headers=server.headers) as http,
                Client(
                    streamable_http_client(server.url, http_client=http),
                    read_timeout_seconds=self._timeout_s,
                    client_info=_CLIENT_INFO,
                    cache=None,  # listings are cached here, per server
                ) as client,
            ):
                yield client

    async def _fetch(self, server: McpServerSpec) -> tuple[ToolDefinition, ...]:
        tools: list[ToolDefinition] = []
        async with self._session(server) as client:
            cursor: str | None = None
            for _ in range(MAX_LIST_PAGES):
                page = await client.list_tools(cursor=cursor)
                tools.extend(
                    ToolDefinition(
                        name=tool.name,
                        description=tool.description or tool.title or "",
                        parameters=tool.input_schema,
                    )
                    for tool in page.tools
                )
                cursor = page.next_cursor
                if cursor is None:
                    break
        return tuple(tools)

    async def list_tools(self, server: McpServerSpec) -> list[ToolDefinition]:
        """The server's tools, in its order, filtered by ``allowed_tools`` when it is non-empty.

        Listed at first use and reused for ``ttl_s``; concurrent first uses share one listing.
        A server that cannot be listed yields ``[]`` and a warning in the log (not cached).
        """
        key = _key(server)
        lock = self._locks.setdefault(key, anyio.Lock())
        async with lock:
            cached = self._listings.get(key)
            if cached is not None and cached[0] > time.monotonic():
                tools = cached[1]
            else:
                try:
                    tools = await self._fetch(server)
                except Exception as exc:  # any failure of the server is "no tools from it"
                    log.warning("MCP tools unavailable: %s", _describe(server, exc, self._timeout_s))
                    return []
                if self._ttl_s > 0:
                    self._listings[key] = (time.monotonic() + self._ttl_s, tools)
        allowed = set(server.allowed_tools)
        return [tool for tool in tools if not allowed or tool.name in allowed]

    async def call(self, server: McpServerSpec, tool: str, arguments: str) -> ToolOutcome:
        """Call ``tool`` with ``arguments`` (the JSON object text the model wrote).

        The output is the result's text content joined by newlines (other content named in
        brackets; the structured content as JSON when there is no content); a result flagged
        ``isError`` is an ``is_error`` outcome. Also ``is_error``, with nothing sent: a tool not
        in a non-empty ``allowed_tools``, arguments that are not a JSON object. And ``is_error``
        for a server that is refused, down, slower than ``timeout_s`` or answers with a protocol
        error (an unknown tool, invalid arguments).
        """
        if server.allowed_tools and tool not in server.allowed_tools:
            return ToolOutcome.failure(f"the tool {tool} of MCP server {server.name} is not allowed")
        try:
            parsed = json.loads(arguments)
        except ValueError as exc:
            return ToolOutcome.failure(f"the arguments are not valid JSON ({exc}); the tool was not called")
        if not isinstance(parsed, dict):
            return ToolOutcome.failure("the arguments must be a JSON object; the tool was not called")
        try:
            async with self._session(server) as client:
                result = await client.call_tool(tool, parsed)
        except Exception as exc:  # any failure of the server is an outcome the model sees
            message = _describe(server, exc, self._timeout_s)
            log.info("MCP call %s failed: %s", tool, message)
            return ToolOutcome.failure(message)
        text = _text(result.content, result.structured_content)
        if result.is_error:
            return ToolOutcome.failure(text or f"the tool {tool} failed without saying why")
        return ToolOutcome(text)

    def forget(self, server: McpServerSpec) -> None:
        """Drop the cached listing of ``server`` (the next :meth:`list_tools` asks it again)."""
        self._listings.pop(_key(server), None)

    async def aclose(self) -> None:
        """Drop every cached listing. No connection outlives an operation, so nothing else is held."""
        self._listings.clear()
        self._locks.clear()
