"""A real MCP server, the ``mcp`` SDK's own ``MCPServer`` (FastMCP before mcp 2) over streamable
HTTP under uvicorn, in a child process: the peer of MCP tool tests.

Tools: ``add(a, b)`` (integers, returns their sum), ``shout(text)`` (upper-cases; empty text is a
tool error, ``nothing to shout``) and ``nap(seconds)`` (sleeps, for timeouts). Every HTTP request
is recorded (method, path, headers, lower-cased) and ``GET /requests`` returns the list as JSON,
so tests can count what reached the server: the ``mcp-method`` header names the JSON-RPC method
(``tools/list``, ``tools/call`` ...).

Run as ``python -m tests.support.mcp_server PORT``; tests use :func:`running_mcp_server`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.net import free_port

__all__ = ["McpTestServer", "running_mcp_server"]

START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class McpTestServer:
    """A running server: ``url`` is its MCP endpoint (``http://127.0.0.1:N/mcp``)."""

    url: str
    port: int

    def requests(self) -> list[dict[str, Any]]:
        """Every request the server has received so far (``/requests`` polls excluded)."""
        with httpx.Client(timeout=5.0) as client:
            answer: list[dict[str, Any]] = client.get(f"http://127.0.0.1:{self.port}/requests").json()
        return answer

    def count(self, mcp_method: str) -> int:
        """How many requests of one JSON-RPC method (``tools/list``) the server has received."""
        return sum(1 for r in self.requests() if r["headers"].get("mcp-method") == mcp_method)


def _serve(port: int) -> None:
    import uvicorn
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from starlette.types import ASGIApp, Receive, Scope, Send

    server = MCPServer("parley-test-peer", log_level="WARNING")

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    def shout(text: str) -> str:
        """Upper-case the text."""
        if not text:
            raise ToolError("nothing to shout")
        return text.upper()

    @server.tool()
    async def nap(seconds: float) -> str:
        """Sleep, then say so."""
        await asyncio.sleep(seconds)
        return "awake"

    recorded: list[dict[str, Any]] = []
    app = server.streamable_http_app(stateless_http=True, json_response=True)

    def recording(inner: ASGIApp) -> ASGIApp:
        async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and scope["path"] == "/requests":
                body = json.dumps(recorded).encode()
                length = str(len(body)).encode()
                start = [(b"content-type", b"application/json"), (b"content-length", length)]
                await send({"type": "http.response.start", "status": 200, "headers": start})
                await send({"type": "http.response.body", "body": body})
                return
            if scope["type"] == "http":
                headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
                recorded.append({"method": scope["method"], "path": scope["path"], "headers": headers})
            await inner(scope, receive, send)

        return asgi

    # A nap cut short by the client still runs here: stopping does not wait for it.
    uvicorn.run(recording(app), host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=1)


@contextlib.contextmanager
def running_mcp_server(log_dir: Path) -> Iterator[McpTestServer]:
    """Start the server on a free loopback port; stop it when the block ends.

    Raises:
        RuntimeError: if it exits or does not answer within 30 s (the message carries its log).
    """
    port = free_port()
    log_path = log_dir / f"mcp-server-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.mcp_server", str(port)],
            cwd=Path(__file__).resolve().parents[2],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            server = McpTestServer(url=f"http://127.0.0.1:{port}/mcp", port=port)
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                if proc.poll() is not None:
                    log_text = log_path.read_text()
                    raise RuntimeError(f"the MCP server exited with {proc.returncode}:\n{log_text}")
                with contextlib.suppress(httpx.TransportError):
                    server.requests()
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the MCP server was not ready:\n{log_path.read_text()}")
                time.sleep(0.2)
            yield server
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
