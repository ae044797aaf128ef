"""HTTP tools (parley.tools.http) against a real local HTTP server.

The peer is ``tests/support/http_tool_server.py`` on 127.0.0.1; the SSRF guard allows loopback
only where a test says so, so every refusal below is the guard's, not a network failure.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from parley.tools.base import ToolOutcome
from parley.tools.http import MAX_REDIRECTS, HttpToolRunner
from parley.tools.ssrf import AddressGuard

from tests.support.http_tool_server import HttpToolServer, running_http_tool_server
from tests.support.net import free_port

LOOPBACK = AddressGuard(["127.0.0.0/8"])


@pytest.fixture
def tool_server() -> Iterator[HttpToolServer]:
    with running_http_tool_server() as server:
        yield server


@pytest.fixture
def other_server() -> Iterator[HttpToolServer]:
    with running_http_tool_server() as server:
        yield server


@pytest.fixture
async def runner() -> AsyncIterator[HttpToolRunner]:
    runner = HttpToolRunner(LOOPBACK, timeout_s=5.0, max_response_bytes=10_000)
    yield runner
    await runner.aclose()


async def test_the_arguments_and_headers_reach_the_tool_and_its_answer_is_the_output(
    runner: HttpToolRunner, tool_server: HttpToolServer
) -> None:
    arguments = '{"city": "القاهرة",  "days": 3}'
    outcome = await runner.call(
        f"{tool_server.url}/answer", {"Authorization": "Bearer s3cret", "X-Tool": "weather"}, arguments
    )

    assert outcome == ToolOutcome(json.dumps({"received": {"city": "القاهرة", "days": 3}, "note": "café ☕"}))
    [request] = tool_server.requests
    assert (request.method, request.path) == ("POST", "/answer")
    assert request.body == arguments.encode()  # byte for byte, not re-encoded
    assert request.headers["content-type"] == "application/json"
    assert request.headers["authorization"] == "Bearer s3cret"
    assert request.headers["x-tool"] == "weather"


async def test_the_content_type_is_always_json(runner: HttpToolRunner, tool_server: HttpToolServer) -> None:
    await runner.call(f"{tool_server.url}/answer", {"Content-Type": "text/plain"}, "{}")
    assert tool_server.requests[0].headers["content-type"] == "application/json"


async def test_a_body_that_is_not_utf8_is_decoded_with_replacements(
    runner: HttpToolRunner, tool_server: HttpToolServer
) -> None:
    assert await runner.call(f"{tool_server.url}/bytes", {}, "{}") == ToolOutcome("ok \ufffd\ufffd")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_loopback_is_refused_without_the_allow_list(tool_server: HttpToolServer, host: str) -> None:
    runner = HttpToolRunner(AddressGuard(), timeout_s=5.0, max_response_bytes=10_000)
    try:
        outcome = await runner.call(f"http://{host}:{tool_server.port}/answer", {}, '{"a": 1}')
    finally:
        await runner.aclose()

    assert outcome.is_error
    assert "refused" in outcome.output and "loopback" in outcome.output
    assert tool_server.requests == []


async def test_the_connection_goes_to_the_address_the_guard_vetted(tool_server: HttpToolServer) -> None:
    """``tool.test`` is in no DNS: the request can only work if the connect uses the guard's
    answer instead of resolving the name again (what a rebinding DNS server would exploit)."""

    class PinnedGuard(AddressGuard):
        def __init__(self) -> None:
            super().__init__()
            self.asked: list[tuple[str, int]] = []

        async def resolve(self, host: str, port: int) -> list[str]:
            self.asked.append((host, port))
            return ["127.0.0.1"]

    guard = PinnedGuard()
    runner = HttpToolRunner(guard, timeout_s=5.0, max_response_bytes=10_000)
    try:
        outcome = await runner.call(f"http://tool.test:{tool_server.port}/answer", {}, "{}")
    finally:
        await runner.aclose()

    assert not outcome.is_error, outcome.output
    assert guard.asked == [("tool.test", tool_server.port)]
    assert tool_server.requests[0].headers["host"] == f"tool.test:{tool_server.port}"


async def test_malformed_arguments_are_not_sent(runner: HttpToolRunner, tool_server: HttpToolServer) -> None:
    outcome = await runner.call(f"{tool_server.url}/answer", {}, '{"city": ')
    assert outcome.is_error
    assert outcome.output.startswith("the arguments are not valid JSON")
    assert tool_server.requests == []


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x", "gopher://127.0.0.1:70/"])
async def test_other_schemes_are_refused(runner: HttpToolRunner, url: str) -> None:
    outcome = await runner.call(url, {}, "{}")
    assert outcome.is_error and "must be http or https" in outcome.output


async def test_a_slow_tool_times_out(tool_server: HttpToolServer) -> None:
    runner = HttpToolRunner(LOOPBACK, timeout_s=0.3, max_response_bytes=10_000)
    started = time.monotonic()
    try:
        outcome = await runner.call(f"{tool_server.url}/slow?s=10", {}, "{}")
    finally:
        await runner.aclose()

    assert outcome == ToolOutcome("the tool did not answer within 0.3 s", is_error=True)
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize("path", ["/big?n=1001", "/stream?n=5000"])  # declared, then streamed
async def test_a_body_over_the_cap_is_an_error(tool_server: HttpToolServer, path: str) -> None:
    runner = HttpToolRunner(LOOPBACK, timeout_s=5.0, max_response_bytes=1000)
    try:
        outcome = await runner.call(f"{tool_server.url}{path}", {}, "{}")
        at_cap = await runner.call(f"{tool_server.url}/stream?n=1000", {}, "{}")
    finally:
        await runner.aclose()

    assert outcome == ToolOutcome("the tool's response is larger than 1000 bytes", is_error=True)
    assert at_cap == ToolOutcome("x" * 1000)


async def test_a_non_2xx_status_is_an_error_with_an_excerpt(
    runner: HttpToolRunner, tool_server: HttpToolServer
) -> None:
    outcome = await runner.call(f"{tool_server.url}/status/503", {}, "{}")
    assert outcome.is_error
    assert outcome.output.startswith(
        "the tool answered HTTP 503 Service Unavailable: something went wrong !!!"
    )
    assert len(outcome.output) < 400


async def test_a_redirect_to_another_host_is_not_followed(
    runner: HttpToolRunner, tool_server: HttpToolServer, other_server: HttpToolServer
) -> None:
    elsewhere = f"http://localhost:{other_server.port}/answer"
    outcome = await runner.call(f"{tool_server.url}/redirect?to={elsewhere}", {"Authorization": "x"}, "{}")

    assert outcome.is_error
    assert f"redirected (307) to {elsewhere}, which is not followed" in outcome.output
    assert other_server.requests == []


async def test_a_same_origin_307_is_followed_with_the_body_and_headers(
    runner: HttpToolRunner, tool_server: HttpToolServer
) -> None:
    outcome = await runner.call(f"{tool_server.url}/redirect?to=/answer", {"X-Tool": "t"}, '{"n": 1}')

    assert outcome == ToolOutcome(json.dumps({"received": {"n": 1}, "note": "café ☕"}))
    _first, second = tool_server.requests
    assert (second.method, second.path, second.body) == ("POST", "/answer", b'{"n": 1}')
    assert second.headers["x-tool"] == "t"


async def test_a_same_origin_302_is_not_followed(runner: HttpToolRunner, tool_server: HttpToolServer) -> None:
    outcome = await runner.call(f"{tool_server.url}/redirect?to=/answer&code=302", {}, "{}")
    assert outcome.is_error and "redirected (302)" in outcome.output
    assert len(tool_server.requests) == 1


async def test_redirects_are_bounded(runner: HttpToolRunner, tool_server: HttpToolServer) -> None:
    outcome = await runner.call(f"{tool_server.url}/loop", {}, "{}")
    assert outcome == ToolOutcome(f"the tool redirected more than {MAX_REDIRECTS} times", is_error=True)
    assert len(tool_server.requests) == MAX_REDIRECTS + 1


async def test_a_tool_that_is_down_is_an_error(runner: HttpToolRunner) -> None:
    outcome = await runner.call(f"http://127.0.0.1:{free_port()}/answer", {}, "{}")
    assert outcome.is_error and outcome.output.startswith("the tool could not be reached")


async def test_one_runner_serves_many_calls(runner: HttpToolRunner, tool_server: HttpToolServer) -> None:
    for n in range(5):
        outcome = await runner.call(f"{tool_server.url}/answer", {}, json.dumps({"n": n}))
        assert json.loads(outcome.output)["received"] == {"n": n}
