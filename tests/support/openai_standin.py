"""A small local HTTP server speaking the OpenAI chat completions wire format (SSE), for the
failure modes a real server cannot be made to produce on demand.

The requested ``model`` picks the behaviour:

* ``status-NNN`` — answer HTTP NNN with an OpenAI-style error body (every attempt is counted);
* ``cut-after-N`` — stream N text chunks, then close the connection without a finish reason;
* ``error-after-N`` — stream N text chunks, then an SSE ``error`` object (as OpenAI does);
* ``content-filter`` — one chunk, ``finish_reason: content_filter``, then a usage chunk;
* ``endless`` — a chunk every 20 ms until the client goes away (recorded in ``disconnected``);
* anything else — ``Hello there.`` in three chunks, ``finish_reason: stop``, and usage.

Real successful generations are tested against a real OpenAI-compatible server
(``python -m llama_cpp.server``); this stand-in only covers what that server cannot be asked to do.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

__all__ = ["StandIn", "running_standin"]


def _chunk(
    content: str | None = None, finish: str | None = None, usage: dict[str, int] | None = None
) -> bytes:
    choices = (
        []
        if usage
        else [{"index": 0, "delta": {"content": content} if content else {}, "finish_reason": finish}]
    )
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

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        model = str(body.get("model", ""))
        self.hits[model] += 1
        self.requests.append(body)
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
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
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
        if model == "content-filter":
            self.wfile.write(_chunk("I cannot"))
            self.wfile.write(_chunk(finish="content_filter"))
            self.wfile.write(_chunk(usage={"prompt_tokens": 11, "completion_tokens": 1, "total_tokens": 12}))
        elif model == "endless":
            while True:
                self.wfile.write(_chunk("more "))
                self.wfile.flush()
                time.sleep(0.02)
        else:
            for piece in ("Hello", " there", "."):
                self.wfile.write(_chunk(piece))
            self.wfile.write(_chunk(finish="stop"))
            self.wfile.write(_chunk(usage={"prompt_tokens": 20, "completion_tokens": 3, "total_tokens": 23}))
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

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
