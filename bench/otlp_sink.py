"""A do-nothing OTLP/HTTP receiver for the ``telemetry`` phase (``bench/telemetry.py``).

Accepts ``POST /v1/traces`` (and ``/v1/metrics``, ``/v1/logs``) with any body and answers 200 with
an empty ``Export*ServiceResponse`` (an empty protobuf message is zero bytes), so the Parley under
test pays its exporter's whole cost (batching, protobuf encoding, one HTTP request per batch) and
nothing waits on a collector. Counts the requests and bytes it received: ``GET /stats`` → JSON.

    python bench/otlp_sink.py PORT
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATS = {"requests": 0, "bytes": 0}


class _Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        size = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(size)
        STATS["requests"] += 1
        STATS["bytes"] += size
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        body = json.dumps(STATS).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), _Sink).serve_forever()
