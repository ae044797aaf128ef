"""A load-test upstream: an OpenAI-compatible chat server that emits tokens at a fixed rate.

    python bench/upstream.py --port 8000 --tokens 64 --tokens-per-second 50

It is *not* a model. Every reply is the same ``--tokens`` words (fewer if the request's
``max_tokens``/``max_completion_tokens`` is smaller), one word per streamed chunk, paced at
``--tokens-per-second`` per stream, the first one ``--first-token-ms`` after the request. A real
model's speed varies with load and prompt; this one does not, so whatever a proxy in front of it
adds (time to first token, inter-token jitter, lost throughput) is what a benchmark measures.

Served (HTTP/1.1 with keep-alive, plain asyncio, no dependencies beyond the standard library):

- ``POST /v1/chat/completions``: ``stream: false`` answers one ``chat.completion`` JSON after the
  whole reply's time; ``stream: true`` answers Server-Sent Events, ``chat.completion.chunk``
  objects as OpenAI sends them (a first chunk with ``role``, one chunk per token, a last chunk
  with ``finish_reason`` ``stop`` or ``length``; then, when ``stream_options.include_usage`` is
  true, a chunk with empty ``choices`` and ``usage``), and ``data: [DONE]``;
- ``GET /v1/models``: the one model (``--model``; any model name is accepted in requests);
- ``GET /health``: 200; ``GET /stats``: requests, streams, peak concurrent streams (JSON).

``usage.prompt_tokens`` is an estimate (characters / 4); ``completion_tokens`` is exact. Only
loopback addresses may be bound: this is a load target, not a service.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

__all__ = ["WORDS", "UpstreamConfig", "UpstreamServer", "main"]

#: The reply: these words, cycled, each with a leading space (a client counts tokens by words).
WORDS = (
    "lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit", "sed", "do", "eiusmod",
    "tempor", "incididunt", "ut", "labore", "et", "dolore", "magna", "aliqua", "enim", "ad", "minim",
    "veniam", "quis", "nostrud", "exercitation", "ullamco", "laboris",
)  # fmt: skip

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class UpstreamConfig:
    """Reply shape and pace.

    Attributes:
        tokens: reply length (tokens = words = streamed content chunks).
        tokens_per_second: pace of one stream after its first token.
        first_token_s: delay from the request to the first token (s); ``None`` means one token
            interval, ``1 / tokens_per_second``.
        model: the model id reported in responses and ``/v1/models``.
    """

    tokens: int = 64
    tokens_per_second: float = 50.0
    first_token_s: float | None = None
    model: str = "bench-model"

    @property
    def interval_s(self) -> float:
        return 1.0 / self.tokens_per_second

    @property
    def ttft_s(self) -> float:
        return self.interval_s if self.first_token_s is None else self.first_token_s


@dataclass
class _Stats:
    requests: int = 0
    streams: int = 0
    active_streams: int = 0
    peak_streams: int = 0
    disconnects: int = 0
    errors: int = 0
    started: float = field(default_factory=time.time)


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 413: "Too Large"}


class UpstreamServer:
    """The server; ``await start(host, port)`` then ``port`` is the bound port."""

    def __init__(self, config: UpstreamConfig) -> None:
        self.config = config
        self.stats = _Stats()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._connection, host, port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    async def serve_forever(self) -> None:
        assert self._server is not None
        async with self._server:
            await self._server.serve_forever()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # --- HTTP/1.1 -------------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                except asyncio.LimitOverrunError:
                    await self._respond(writer, 413, {"error": {"message": "request head too large"}})
                    return
                keep_alive = await self._request(head, reader, writer)
                if not keep_alive:
                    return
        except ConnectionError:
            self.stats.disconnects += 1
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _request(self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Handle one request; True to keep the connection open."""
        self.stats.requests += 1
        try:
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await _read_body(reader, headers)
        except (ValueError, asyncio.IncompleteReadError) as exc:
            await self._respond(writer, 400, {"error": {"message": f"bad request: {exc}"}}, close=True)
            return False
        keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        path = target.split("?", 1)[0]
        try:
            if path in ("/v1/chat/completions", "/chat/completions"):
                if method != "POST":
                    raise _BadRequest(405, "use POST")
                try:
                    request = json.loads(body or b"{}")
                except json.JSONDecodeError as exc:
                    raise _BadRequest(400, f"body is not JSON: {exc}") from exc
                if not isinstance(request, dict):
                    raise _BadRequest(400, "body must be a JSON object")
                if request.get("stream"):
                    await self._stream(request, writer, keep_alive)
                else:
                    await self._complete(request, writer, keep_alive)
            elif path in ("/v1/models", "/models") and method == "GET":
                model = {"id": self.config.model, "object": "model", "created": 0, "owned_by": "bench"}
                await self._respond(writer, 200, {"object": "list", "data": [model]}, close=not keep_alive)
            elif path == "/health" and method == "GET":
                await self._respond(writer, 200, {"status": "ok"}, close=not keep_alive)
            elif path == "/stats" and method == "GET":
                await self._respond(writer, 200, self.stats.__dict__, close=not keep_alive)
            else:
                raise _BadRequest(404, f"no route {method} {path}")
        except _BadRequest as exc:
            self.stats.errors += 1
            error = {"message": str(exc), "type": "invalid_request_error"}
            await self._respond(writer, exc.status, {"error": error}, close=not keep_alive)
        return keep_alive

    async def _respond(
        self, writer: asyncio.StreamWriter, status: int, payload: Any, *, close: bool = False
    ) -> None:
        body = json.dumps(payload).encode()
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
            + ("connection: close\r\n" if close else "")
            + "\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()

    # --- chat completions -----------------------------------------------------------------------

    def _reply_tokens(self, request: dict[str, Any]) -> tuple[int, str]:
        """(token count, finish_reason) for ``request``."""
        limit = request.get("max_completion_tokens") or request.get("max_tokens")
        n = self.config.tokens
        if isinstance(limit, int) and 0 < limit < n:
            return limit, "length"
        return n, "stop"

    @staticmethod
    def _prompt_tokens(request: dict[str, Any]) -> int:
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _BadRequest(400, "messages must be a non-empty list")
        chars = sum(len(str(m.get("content", ""))) for m in messages if isinstance(m, dict))
        return max(1, chars // 4)

    async def _complete(
        self, request: dict[str, Any], writer: asyncio.StreamWriter, keep_alive: bool
    ) -> None:
        prompt_tokens = self._prompt_tokens(request)
        n, finish_reason = self._reply_tokens(request)
        cfg = self.config
        await asyncio.sleep(cfg.ttft_s + (n - 1) * cfg.interval_s)
        text = "".join(" " + WORDS[i % len(WORDS)] for i in range(n))
        payload = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model") or cfg.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": n,
                "total_tokens": prompt_tokens + n,
            },
        }
        await self._respond(writer, 200, payload, close=not keep_alive)

    async def _stream(self, request: dict[str, Any], writer: asyncio.StreamWriter, keep_alive: bool) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        prompt_tokens = self._prompt_tokens(request)
        n, finish_reason = self._reply_tokens(request)
        options = request.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        cfg = self.config
        model = json.dumps(request.get("model") or cfg.model)
        # Every chunk is the same JSON but for its delta: build the bytes around it once.
        prefix = (
            f'data: {{"id":"chatcmpl-{uuid.uuid4().hex}","object":"chat.completion.chunk",'
            f'"created":{int(time.time())},"model":{model},"system_fingerprint":null,"choices":'
        )

        def chunk(choices: str, extra: str = "") -> bytes:
            data = f"{prefix}{choices}{extra}}}\n\n".encode()
            return b"%x\r\n%b\r\n" % (len(data), data)

        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n"
            + (b"" if keep_alive else b"connection: close\r\n")
            + b"\r\n"
            + chunk('[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]')
        )
        self.stats.streams += 1
        self.stats.active_streams += 1
        self.stats.peak_streams = max(self.stats.peak_streams, self.stats.active_streams)
        try:
            for i in range(n):
                delay = start + cfg.ttft_s + i * cfg.interval_s - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                word = WORDS[i % len(WORDS)]
                writer.write(chunk(f'[{{"index":0,"delta":{{"content":" {word}"}},"finish_reason":null}}]'))
                if writer.transport.get_write_buffer_size() > 64 * 1024:
                    await writer.drain()
                if writer.transport.is_closing():
                    raise ConnectionResetError("client went away")
            tail = chunk(f'[{{"index":0,"delta":{{}},"finish_reason":"{finish_reason}"}}]')
            if include_usage:
                usage = (
                    f',"usage":{{"prompt_tokens":{prompt_tokens},"completion_tokens":{n},'
                    f'"total_tokens":{prompt_tokens + n}}}'
                )
                tail += chunk("[]", usage)
            done = b"data: [DONE]\n\n"
            writer.write(tail + b"%x\r\n%b\r\n0\r\n\r\n" % (len(done), done))
            await writer.drain()
        finally:
            self.stats.active_streams -= 1


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts: list[bytes] = []
        size = 0
        while True:
            line = await reader.readuntil(b"\r\n")
            length = int(line.split(b";", 1)[0].strip(), 16)
            if length == 0:
                await reader.readuntil(b"\r\n")
                return b"".join(parts)
            size += length
            if size > MAX_BODY_BYTES:
                raise ValueError("body too large")
            parts.append(await reader.readexactly(length))
            await reader.readexactly(2)
    length = int(headers.get("content-length", "0") or "0")
    if length < 0 or length > MAX_BODY_BYTES:
        raise ValueError("bad content-length")
    return await reader.readexactly(length) if length else b""


def _loopback(host: str) -> str:
    try:
        if ipaddress.ip_address(host).is_loopback:
            return host
    except ValueError:
        if host == "localhost":
            return host
    raise argparse.ArgumentTypeError(f"{host!r} is not a loopback address (this is a load target)")


async def _main(args: argparse.Namespace) -> None:
    server = UpstreamServer(
        UpstreamConfig(
            tokens=args.tokens,
            tokens_per_second=args.tokens_per_second,
            first_token_s=None if args.first_token_ms is None else args.first_token_ms / 1000,
            model=args.model,
        )
    )
    await server.start(args.host, args.port)
    # The harness reads this line to learn the port (``--port 0`` picks a free one).
    print(f"upstream listening on http://{args.host}:{server.port}/v1", flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    serving = asyncio.create_task(server.serve_forever())
    await stop.wait()
    serving.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await serving


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", type=_loopback, default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed)")
    parser.add_argument("--tokens", type=int, default=64, help="reply length, tokens")
    parser.add_argument("--tokens-per-second", type=float, default=50.0, help="pace per stream")
    parser.add_argument(
        "--first-token-ms", type=float, default=None, help="delay to the first token (default: 1 interval)"
    )
    parser.add_argument("--model", default="bench-model", help="model id in responses")
    args = parser.parse_args(argv)
    if args.tokens < 1 or args.tokens_per_second <= 0:
        parser.error("--tokens must be >= 1 and --tokens-per-second > 0")
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
