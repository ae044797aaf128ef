"""An OpenAI-compatible HTTP server for a GGUF model: llama.cpp's own server engine (xllamacpp).

The real OpenAI-compatible peer of the tests (``tests/support/llama_server.py``) and the
benchmark (``bench/procs.py``): ``/v1/models``, ``/v1/chat/completions`` (streamed or not) as
llama.cpp's ``llama-server`` answers them, in front of the same engine the embedded model uses.

Usage::

    python scripts/llama_server.py --model F.gguf --port 8081 [--alias smollm2] [--ctx 2048]
        [--threads 1] [--parallel 1] [--seed 42]

Serves on 127.0.0.1 until SIGTERM or SIGINT; prints ``listening on http://127.0.0.1:PORT`` once
ready. Exit status 0 after a signal, 1 when the model cannot be loaded.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from parley.providers.llm.engine import engine_params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="GGUF file")
    parser.add_argument("--port", type=int, required=True, help="loopback port (0: a free one)")
    parser.add_argument("--alias", default="smollm2", help="the model name the server answers to")
    parser.add_argument("--ctx", type=int, default=2048, help="tokens of context per request")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    parser.add_argument("--parallel", type=int, default=1, help="requests generated at once")
    parser.add_argument("--seed", type=int, default=-1, help="default sampling seed (-1: random)")
    args = parser.parse_args(argv)

    import xllamacpp

    params = engine_params(
        args.model,
        context_window=args.ctx,
        parallel=args.parallel,
        threads=args.threads,
        port=args.port,
        alias=args.alias,
    )
    if args.seed >= 0:
        params.sampling.seed = args.seed
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        server = xllamacpp.Server(params)
    except Exception as exc:
        print(f"could not load {args.model}: {exc}", file=sys.stderr)
        return 1
    print(f"listening on {server.listening_address}", flush=True)
    stop.wait()
    del server  # stops the engine's threads
    return 0


if __name__ == "__main__":
    sys.exit(main())
