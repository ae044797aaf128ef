"""A small local HTTP server speaking the OpenAI chat completions wire format (SSE), for the
failure modes a real server cannot be made to produce on demand.

The requested ``model`` picks the behaviour:

* ``status-NNN`` — answer HTTP NNN with an OpenAI-style error body (every attempt is counted);
* ``cut-after-N`` — stream N text chunks, then close the connection without a finish reason;
* ``error-after-N`` — stream N text chunks, then an SSE ``error`` object (as OpenAI does);
* ``content-filter`` — one chunk, ``finish_reason: content_filter``, then a usage chunk;
* ``endless`` — a chunk every 20 ms until the client goes away (recorded in ``disconnected``);
* ``burst-N`` — N text chunks (``tok0 `` ...), ``finish_reason: stop``, usage and ``[DONE]``, all
  in one write (what a client reads at once when it falls behind a fast server);
  ``burst-N-no-usage`` the same without the usage chunk (as llama.cpp's server);
  ``chunked-burst-N`` the same over HTTP/1.1, one HTTP chunk per event (as servers frame them),
  and the connection kept open for the next request;
* ``gated-N`` — N text chunks, one write each, every one after the first only once the test
  has released ``gate`` (a semaphore) once more; then ``stop``, usage and ``[DONE]``;
* ``garbage-after-N`` — N text chunks, then an event whose data is not JSON;
* ``tools-*`` — plays the next :class:`Step` of the class-level queue ``StandIn.steps`` (tests
  fill it), one step per request: its text chunks, then its tool calls streamed the way OpenAI
  streams them (each call's first chunk has ``index``, ``id``, ``type`` and ``function.name``,
  the next ones only ``index`` and a ``function.arguments`` piece), then ``finish_reason``
  (``tool_calls`` when the step has calls, else ``stop``, unless the step says otherwise) and
  a usage chunk. The argument pieces of a step's calls are interleaved round-robin by index,
  which OpenAI itself does not do (it sends one call after the other) but a client must
  survive. With the queue empty it answers like any other model;
* anything else — ``Hello there.`` in three chunks, ``finish_reason: stop``, and usage.

Every request body is recorded in ``requests`` (oldest first), so tests can check the tools
and tool turns sent, and the client's address of every request in ``peers`` (a reused
connection has the same port).

Real successful generations are tested against a real OpenAI-compatible server (llama.cpp's
server engine, ``scripts/llama_server.py``); this stand-in only covers what that server cannot
be asked to do (SmolLM2 does not make tool calls on demand).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import zip_longest
from typing import Any, ClassVar

__all__ = ["ScriptedCall", "StandIn", "Step", "running_standin"]


@dataclass(frozen=True)
class ScriptedCall:
    """A tool call to stream: ``id`` ``""`` sends none (the client must make one up);
    ``arguments`` are the pieces of the arguments' JSON text, one chunk each."""

    id: str
    name: str
    arguments: Sequence[str] = ()


@dataclass(frozen=True)
class Step:
    """What a ``tools-*`` model answers to one request (see the module docstring)."""

    text: Sequence[str] = ()
    calls: Sequence[ScriptedCall] = ()
    #: ``finish_reason``; ``None``: ``tool_calls`` when there are calls, else ``stop``.
    finish: str | None = None
    #: ``(prompt_tokens, completion_tokens)`` of the usage chunk.
    usage: tuple[int, int] = (30, 9)


def _chunk(
    content: str | None = None,
    finish: str | None = None,
    usage: dict[str, int] | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
) -> bytes:
    delta: dict[str, Any] = {"content": content} if content else {}
    if tool_calls:
        delta = {"tool_calls": tool_calls}
    choices = [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]
    body: dict[str, Any] = {
        "id": "chatcmpl-standin",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "standin",
        "choices": choices,
    }
    if usage:
        body["usage"] = usage
    return f"data: {json.dumps(body)}\n\n".encode()


class StandIn(BaseHTTPRequestHandler):
    hits: ClassVar[Counter[str]] = Counter()
    requests: ClassVar[list[dict[str, Any]]] = []
    disconnected: ClassVar[threading.Event] = threading.Event()
    #: What ``tools-*`` models answer, one step per request.
    steps: ClassVar[deque[Step]] = deque()
    peers: ClassVar[list[tuple[str, int]]] = []
    #: Released by ``gated-N`` tests, once per chunk they have received.
    gate: ClassVar[threading.Semaphore] = threading.Semaphore(0)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        model = str(body.get("model", ""))
        self.hits[model] += 1
        self.requests.append(body)
        self.peers.append(self.client_address)
        if status := re.fullmatch(r"status-(\d{3})", model):
            error = json.dumps(
                {"error": {"message": "stand-in error", "type": "test", "code": None}}
            ).encode()
            self.send_response(int(status.group(1)))
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(error)))
            self.end_headers()
            self.wfile.write(error)
            return
        chunked = model.startswith("chunked-")
        if chunked:  # HTTP/1.1, kept alive
            self.protocol_version = "HTTP/1.1"
            self.close_connection = False
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            self._stream(model)
        except (BrokenPipeError, ConnectionResetError):
            self.disconnected.set()

    def _stream(self, model: str) -> None:
        if cut := re.fullmatch(r"(cut|error)-after-(\d+)", model):
            for i in range(int(cut.group(2))):
                self.wfile.write(_chunk(f"part{i} "))
            if cut.group(1) == "error":
                self.wfile.write(
                    b'data: {"error": {"message": "the model crashed", "type": "server_error"}}\n\n'
                )
            self.wfile.flush()
            return  # the connection closes: no finish reason, no [DONE]
        if burst := re.fullmatch(r"(chunked-)?burst-(\d+)(-no-usage)?", model):
            events = [_chunk(f"tok{i} ") for i in range(int(burst.group(2)))]
            events.append(_chunk(finish="stop"))
            if not burst.group(3):
                usage = {"prompt_tokens": 20, "completion_tokens": 50, "total_tokens": 70}
                events.append(_chunk(usage=usage))
            events.append(b"data: [DONE]\n\n")
            if burst.group(1):
                events = [b"%x\r\n%b\r\n" % (len(e), e) for e in events] + [b"0\r\n\r\n"]
            self.wfile.write(b"".join(events))
            self.wfile.flush()
            return
        if gated := re.fullmatch(r"gated-(\d+)", model):
            for i in range(int(gated.group(1))):
                if i and not self.gate.acquire(timeout=10.0):
                    return  # the client never took the last chunk: end without a finish reason
                self.wfile.write(_chunk(f"part{i} "))
                self.wfile.flush()
            self.wfile.write(_chunk(finish="stop"))
            self.wfile.write(_chunk(usage={"prompt_tokens": 20, "completion_tokens": 3, "total_tokens": 23}))
        elif garbage := re.fullmatch(r"garbage-after-(\d+)", model):
            for i in range(int(garbage.group(1))):
                self.wfile.write(_chunk(f"part{i} "))
            self.wfile.write(b'data: {"choices": [{"delta": {"content": "x"\n\n')
            self.wfile.flush()
            return
        elif model == "content-filter":
            self.wfile.write(_chunk("I cannot"))
            self.wfile.write(_chunk(finish="content_filter"))
            self.wfile.write(_chunk(usage={"prompt_tokens": 11, "completion_tokens": 1, "total_tokens": 12}))
        elif model == "endless":
            while True:
                self.wfile.write(_chunk("more "))
                self.wfile.flush()
                time.sleep(0.02)
        elif model.startswith("tools-") and self.steps:
            self._play(self.steps.popleft())
        else:
            for piece in ("Hello", " there", "."):
                self.wfile.write(_chunk(piece))
            self.wfile.write(_chunk(finish="stop"))
            self.wfile.write(_chunk(usage={"prompt_tokens": 20, "completion_tokens": 3, "total_tokens": 23}))
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def _play(self, step: Step) -> None:
        for piece in step.text:
            self.wfile.write(_chunk(piece))
        for index, call in enumerate(step.calls):
            first: dict[str, Any] = {"index": index, "type": "function"}
            first["function"] = {"name": call.name, "arguments": ""}
            if call.id:
                first["id"] = call.id
            self.wfile.write(_chunk(tool_calls=[first]))
        for pieces in zip_longest(*(call.arguments for call in step.calls)):
            for index, piece in enumerate(pieces):
                if piece is not None:
                    self.wfile.write(_chunk(tool_calls=[{"index": index, "function": {"arguments": piece}}]))
        self.wfile.write(_chunk(finish=step.finish or ("tool_calls" if step.calls else "stop")))
        prompt, completion = step.usage
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        self.wfile.write(_chunk(usage=usage))

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def running_standin() -> Iterator[str]:
    """Serve the stand-in on a free loopback port; yields its base URL (``http://127.0.0.1:N/v1``)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
