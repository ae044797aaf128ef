"""The embedded model's engine: llama.cpp's server (xllamacpp) in a process of its own.

:class:`EngineProcess` starts it with :func:`~parley.providers.priority.start_background` (its
priority lowered before anything else is imported) in a session of its own (its own scheduling
group, priority.py), and hands it its configuration as one JSON line on standard input, so the
engine's API key never appears in a process listing::

    {"model_path": str, "context_window": int, "parallel": int, "threads": int,
     "socket_path": str, "api_key": str}

The engine loads the model and answers with one JSON line on standard output: ``{"ready": true}``,
or ``{"error": "<why the model could not be loaded>"}`` before it exits with status 1. It then
serves llama.cpp's HTTP API (``/v1/chat/completions``, ``/tokenize``, ``/apply-template`` ...) on
the Unix socket ``socket_path`` behind ``api_key`` until its standard input closes (the server
closed it, or exited however it did: the engine never outlives it) or it gets SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from parley.providers.priority import start_background, stop_background

__all__ = ["EngineProcess", "engine_params", "main"]

#: Sampling settings of every generation (temperature is per request).
TOP_P = 0.9
REPEAT_PENALTY = 1.1
#: The longest wait for the engine to load its model (s): SmolLM2-135M takes under a second.
LOAD_TIMEOUT_S = 120.0
#: The longest wait for the engine to exit after its standard input closes (s), before SIGKILL.
STOP_TIMEOUT_S = 5.0


def engine_params(
    model_path: Path,
    *,
    context_window: int,
    parallel: int,
    threads: int,
    port: int = 0,
    socket_path: Path | None = None,
    api_key: str | None = None,
    alias: str | None = None,
) -> Any:
    """xllamacpp ``CommonParams`` for ``model_path``: ``parallel`` slots of ``context_window``
    tokens, ``threads`` CPU threads for prompt and generation, listening on the Unix socket
    ``socket_path`` if given, else on 127.0.0.1:``port`` (0: a free port), behind ``api_key``,
    answering to ``alias``; llama.cpp's log silenced.

    Shared with ``scripts/llama_server.py`` (the OpenAI-compatible peer of tests and benchmark).
    """
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(model_path)
    params.n_parallel = parallel
    params.n_ctx = context_window * parallel  # split evenly: each slot holds context_window
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.ctx_shift = False
    # A final assistant message is a finished turn, not a prefix to continue: prompts (and
    # count_tokens of a history that ends with a reply) always end with the assistant header.
    params.prefill_assistant = False
    params.hostnames = [str(socket_path)] if socket_path else ["127.0.0.1"]  # llama.cpp: *.sock is AF_UNIX
    params.port = port
    if api_key:
        params.api_keys = [api_key]
    if alias:
        params.model_alias = {alias}
    params.verbosity = -1
    params.sampling.top_p = TOP_P
    params.sampling.penalty_repeat = REPEAT_PENALTY
    return params


class EngineProcess:
    """The server's handle on a running engine process (see the module docstring)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        """None while the engine runs; its exit status (negative: the signal) once it has ended."""
        return self._process.returncode

    @classmethod
    async def start(cls, config: dict[str, Any]) -> EngineProcess:
        """Start an engine with ``config`` (the module docstring's fields) and wait until its
        model is loaded.

        Raises:
            RuntimeError: the engine could not load the model (llama.cpp's reason), exited, or
                was not ready within ``LOAD_TIMEOUT_S`` seconds.
        """
        process = await start_background(__name__)
        engine = cls(process)
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(json.dumps(config).encode() + b"\n")
            await process.stdin.drain()
            line = await asyncio.wait_for(process.stdout.readline(), LOAD_TIMEOUT_S)
            answer = (
                json.loads(line) if line.strip() else {"error": f"exited with status {await process.wait()}"}
            )
        except (TimeoutError, OSError, ValueError) as exc:
            await engine.stop()
            raise RuntimeError(f"the engine did not start: {exc!r}") from exc
        except BaseException:
            await engine.stop()
            raise
        if not answer.get("ready"):
            await engine.stop()
            raise RuntimeError(str(answer.get("error", answer)))
        return engine

    async def wait(self) -> int:
        """Wait until the engine has exited; its exit status (negative: the signal)."""
        return await self._process.wait()

    async def stop(self) -> None:
        """Close the engine's standard input (it exits), wait ``STOP_TIMEOUT_S``, then kill it."""
        await stop_background(self._process, STOP_TIMEOUT_S)


def main() -> int:
    """The engine process (see the module docstring); its exit status."""
    config = json.loads(sys.stdin.readline())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server's Ctrl-C is the server's to handle
    try:
        import xllamacpp

        params = engine_params(
            Path(config["model_path"]),
            context_window=config["context_window"],
            parallel=config["parallel"],
            threads=config["threads"],
            socket_path=Path(config["socket_path"]),
            api_key=config["api_key"],
        )
        Path(config["socket_path"]).unlink(missing_ok=True)  # an engine before this one died
        server = xllamacpp.Server(params)
    except Exception as exc:  # llama.cpp reports a bad file as a RuntimeError
        print(json.dumps({"error": str(exc) or type(exc).__name__}), flush=True)
        return 1
    print(json.dumps({"ready": True}), flush=True)

    def until_stdin_closes() -> None:
        with contextlib.suppress(OSError, ValueError):
            sys.stdin.buffer.read()
        stop.set()

    threading.Thread(target=until_stdin_closes, name="stdin", daemon=True).start()
    while not stop.wait(1.0):  # a timed wait: signals are handled while it waits
        pass
    del server  # stops the engine's threads
    return 0


if __name__ == "__main__":
    sys.exit(main())
