"""A real HTTP server (stdlib ``http.server`` in a thread) used as the peer of HTTP tool tests.

It records every request it receives (method, path, headers, body) and answers by path:

* ``/answer`` — 200, ``application/json``: ``{"received": <the request body>, "note": "café ☕"}``;
* ``/bytes`` — 200, the bytes ``ok \\xff\\xfe`` (not UTF-8);
* ``/big?n=N`` — 200 with N bytes of ``x`` and a Content-Length;
* ``/stream?n=N`` — 200 with N bytes of ``x`` in 1 KiB writes, no Content-Length (HTTP/1.0:
  the body ends when the connection closes);
* ``/slow?s=S`` — waits S seconds (or until the server stops), then answers like ``/answer``;
* ``/status/NNN`` — status NNN with a plain-text error body;
* ``/redirect?to=URL&code=NNN`` — status NNN (default 307) with ``Location: URL``;
* ``/loop`` — 307 to itself, forever.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

__all__ = ["HttpToolServer", "RecordedRequest", "running_http_tool_server"]


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    #: Header names lower-cased.
    headers: dict[str, str]
    body: bytes


@dataclass
class HttpToolServer:
    """A running server: ``url`` is its root (``http://127.0.0.1:N``), ``requests`` what it got."""

    url: str
    port: int
    requests: list[RecordedRequest] = field(default_factory=list)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str) -> None:
        super().__init__((host, 0), _Handler)
        self.record: list[RecordedRequest] = []
        self.stopping = threading.Event()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _answer(self, body: bytes) -> None:
        received = json.loads(body) if body else None
        self._send(200, json.dumps({"received": received, "note": "café ☕"}).encode())

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.record.append(
            RecordedRequest(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        )
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/answer":
            self._answer(body)
        elif url.path == "/bytes":
            self._send(200, b"ok \xff\xfe", "text/plain")
        elif url.path == "/big":
            self._send(200, b"x" * int(query["n"]), "text/plain")
        elif url.path == "/stream":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            for start in range(0, int(query["n"]), 1024):
                self.wfile.write(b"x" * min(1024, int(query["n"]) - start))
        elif url.path == "/slow":
            self.server.stopping.wait(float(query["s"]))
            self._answer(body)
        elif url.path.startswith("/status/"):
            status = int(url.path.rpartition("/")[2])
            self._send(status, b"  something\n went   wrong  " + b"!" * 1000, "text/plain")
        elif url.path in ("/redirect", "/loop"):
            self.send_response(int(query.get("code", "307")))
            self.send_header("Location", query.get("to", "/loop"))
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._send(404, b"no such path", "text/plain")

    def do_POST(self) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up
            self._handle()

    do_GET = do_POST

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def running_http_tool_server(
    host: str = "127.0.0.1", tls: ssl.SSLContext | None = None
) -> Iterator[HttpToolServer]:
    """Serve on a free port of ``host`` until the block ends (in-flight slow answers are released).

    With ``tls`` (a server-side context) it speaks HTTPS, and ``url`` starts with ``https://``.
    """
    server = _Server(host)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    port = int(server.server_address[1])
    scheme = "http" if tls is None else "https"
    info = HttpToolServer(url=f"{scheme}://{host}:{port}", port=port, requests=server.record)
    try:
        yield info
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join()
