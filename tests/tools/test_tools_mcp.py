"""MCP tools (parley.tools.mcp) against a real MCP server: the SDK's own ``MCPServer`` over
streamable HTTP in a child process (``tests/support/mcp_server.py``), on 127.0.0.1.

The server records every request, so the tests can tell what reached it (listings served from
the cache, calls refused before sending).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from parley.providers.llm.base import ToolDefinition
from parley.tools.base import ToolOutcome
from parley.tools.mcp import McpServerSpec, McpTools
from parley.tools.ssrf import AddressGuard

from tests.support.mcp_server import McpTestServer, running_mcp_server
from tests.support.net import free_port

LOOPBACK = AddressGuard(["127.0.0.1"])
HEADERS = {"Authorization": "Bearer mcp-token", "X-Tenant": "t1"}


@pytest.fixture(scope="module")
def mcp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[McpTestServer]:
    with running_mcp_server(tmp_path_factory.mktemp("mcp")) as server:
        yield server


@pytest.fixture
def spec(mcp_server: McpTestServer) -> McpServerSpec:
    return McpServerSpec(name="peer", url=mcp_server.url, headers=HEADERS)


@pytest.fixture
async def tools() -> AsyncIterator[McpTools]:
    tools = McpTools(LOOPBACK, ttl_s=60.0, timeout_s=10.0)
    yield tools
    await tools.aclose()


def down() -> McpServerSpec:
    return McpServerSpec(name="gone", url=f"http://127.0.0.1:{free_port()}/mcp", headers={})


async def test_the_server_tools_are_listed_as_definitions(tools: McpTools, spec: McpServerSpec) -> None:
    listed = await tools.list_tools(spec)

    assert [tool.name for tool in listed] == ["add", "shout", "nap"]  # no server prefix
    add = listed[0]
    assert isinstance(add, ToolDefinition)
    assert add.description == "Add two integers."
    assert add.parameters["type"] == "object"
    assert set(add.parameters["properties"]) == {"a", "b"}
    assert add.parameters["required"] == ["a", "b"]


async def test_allowed_tools_filter_the_listing(tools: McpTools, spec: McpServerSpec) -> None:
    limited = McpServerSpec(spec.name, spec.url, spec.headers, allowed_tools=("shout", "missing"))
    assert [tool.name for tool in await tools.list_tools(limited)] == ["shout"]


async def test_a_listing_is_reused_within_the_ttl(mcp_server: McpTestServer, spec: McpServerSpec) -> None:
    tools = McpTools(LOOPBACK, ttl_s=0.5, timeout_s=10.0)
    before = mcp_server.count("tools/list")

    first = await tools.list_tools(spec)
    second = await tools.list_tools(spec)
    limited = await tools.list_tools(McpServerSpec("other", spec.url, spec.headers, allowed_tools=("add",)))
    assert mcp_server.count("tools/list") == before + 1  # one listing served all three
    assert first == second and [tool.name for tool in limited] == ["add"]

    await tools.list_tools(McpServerSpec(spec.name, spec.url, {**HEADERS, "X-Tenant": "t2"}))
    assert mcp_server.count("tools/list") == before + 2  # other headers, other listing

    await asyncio.sleep(0.6)
    assert await tools.list_tools(spec) == first
    assert mcp_server.count("tools/list") == before + 3  # expired: listed again
    await tools.aclose()


async def test_concurrent_first_listings_share_one_request(
    mcp_server: McpTestServer, spec: McpServerSpec, tools: McpTools
) -> None:
    before = mcp_server.count("tools/list")
    listings = await asyncio.gather(*(tools.list_tools(spec) for _ in range(4)))
    assert all(listing == listings[0] for listing in listings)
    assert mcp_server.count("tools/list") == before + 1


async def test_a_call_returns_the_text_content(tools: McpTools, spec: McpServerSpec) -> None:
    assert await tools.call(spec, "add", '{"a": 2, "b": 40}') == ToolOutcome("42")
    assert await tools.call(spec, "shout", '{"text": "héllo"}') == ToolOutcome("HÉLLO")


async def test_a_tool_error_is_an_error_outcome(tools: McpTools, spec: McpServerSpec) -> None:
    outcome = await tools.call(spec, "shout", '{"text": ""}')
    assert outcome.is_error
    assert "nothing to shout" in outcome.output


async def test_an_unknown_tool_and_invalid_arguments_are_error_outcomes(
    tools: McpTools, spec: McpServerSpec
) -> None:
    unknown = await tools.call(spec, "missing", "{}")
    invalid = await tools.call(spec, "add", '{"a": "two"}')
    assert unknown.is_error and "missing" in unknown.output
    assert invalid.is_error


async def test_the_headers_reach_the_server(
    mcp_server: McpTestServer, tools: McpTools, spec: McpServerSpec
) -> None:
    seen = len(mcp_server.requests())
    await tools.call(spec, "add", '{"a": 1, "b": 1}')

    new = mcp_server.requests()[seen:]
    assert new, "the call sent nothing"
    for request in new:
        assert request["headers"]["authorization"] == "Bearer mcp-token"
        assert request["headers"]["x-tenant"] == "t1"


async def test_a_tool_outside_allowed_tools_is_not_called(
    mcp_server: McpTestServer, tools: McpTools, spec: McpServerSpec
) -> None:
    limited = McpServerSpec(spec.name, spec.url, spec.headers, allowed_tools=("add",))
    seen = len(mcp_server.requests())

    outcome = await tools.call(limited, "shout", '{"text": "hi"}')

    assert outcome == ToolOutcome("the tool shout of MCP server peer is not allowed", is_error=True)
    assert len(mcp_server.requests()) == seen


@pytest.mark.parametrize(
    ("arguments", "message"),
    [('{"a": ', "the arguments are not valid JSON"), ("[1, 2]", "the arguments must be a JSON object")],
)
async def test_malformed_arguments_are_not_sent(
    mcp_server: McpTestServer, tools: McpTools, spec: McpServerSpec, arguments: str, message: str
) -> None:
    seen = len(mcp_server.requests())
    outcome = await tools.call(spec, "add", arguments)
    assert outcome.is_error and outcome.output.startswith(message)
    assert len(mcp_server.requests()) == seen


async def test_a_server_that_is_down_gives_no_tools_and_error_outcomes(
    tools: McpTools, caplog: pytest.LogCaptureFixture
) -> None:
    gone = down()
    with caplog.at_level(logging.WARNING, logger="parley.tools.mcp"):
        assert await tools.list_tools(gone) == []
    assert "MCP tools unavailable: the MCP server gone could not be reached" in caplog.text

    outcome = await tools.call(gone, "add", '{"a": 1, "b": 2}')
    assert outcome.is_error and outcome.output.startswith("the MCP server gone could not be reached")


async def test_a_failed_listing_is_not_cached(mcp_server: McpTestServer, tools: McpTools) -> None:
    spec = McpServerSpec("flaky", mcp_server.url, {})
    refusing = McpTools(AddressGuard(), ttl_s=60.0, timeout_s=10.0)
    assert await refusing.list_tools(spec) == []
    # The same McpTools keeps no negative entry: a listing that works later is served.
    assert [tool.name for tool in await tools.list_tools(spec)] == ["add", "shout", "nap"]


async def test_the_ssrf_guard_applies_to_mcp_urls(mcp_server: McpTestServer) -> None:
    tools = McpTools(AddressGuard(), ttl_s=60.0, timeout_s=10.0)
    spec = McpServerSpec("local", mcp_server.url, {})
    seen = len(mcp_server.requests())

    assert await tools.list_tools(spec) == []
    outcome = await tools.call(spec, "add", '{"a": 1, "b": 2}')

    assert outcome.is_error
    assert outcome.output.startswith("the MCP server local was refused: 127.0.0.1 is a loopback address")
    assert len(mcp_server.requests()) == seen


async def test_a_slow_call_times_out(spec: McpServerSpec) -> None:
    tools = McpTools(LOOPBACK, ttl_s=60.0, timeout_s=0.5)
    started = time.monotonic()
    outcome = await tools.call(spec, "nap", '{"seconds": 10}')
    assert outcome == ToolOutcome("the MCP server peer did not answer within 0.5 s", is_error=True)
    assert time.monotonic() - started < 3.0
