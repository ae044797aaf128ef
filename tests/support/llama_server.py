"""A real OpenAI-compatible server for tests: llama.cpp's server engine running SmolLM2.

``scripts/llama_server.py`` starts it in its own process (xllamacpp, the engine of the embedded
model): ``/v1/models`` and ``/v1/chat/completions`` as llama.cpp's ``llama-server`` answers them.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.support.net import free_port

__all__ = ["MODEL_ALIAS", "running_llama_server"]

#: The model name the server answers to (``--model_alias``).
MODEL_ALIAS = "smollm2"

START_TIMEOUT_S = 120.0

LLAMA_SERVER = Path(__file__).resolve().parents[2] / "scripts" / "llama_server.py"


@contextlib.contextmanager
def running_llama_server(model_path: Path, log_dir: Path, *, n_ctx: int = 2048) -> Iterator[str]:
    """Serve ``model_path`` on a free loopback port; yields the API root (``http://127.0.0.1:N/v1``).

    Raises:
        RuntimeError: if the server exits or does not answer ``GET /v1/models`` within 120 s
            (the message carries its log).
    """
    port = free_port()
    log_path = log_dir / f"llama-server-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(LLAMA_SERVER),
                "--model",
                str(model_path),
                "--alias",
                MODEL_ALIAS,
                "--port",
                str(port),
                "--ctx",
                str(n_ctx),
                "--threads",
                "1",
                "--seed",
                "42",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base_url = f"http://127.0.0.1:{port}/v1"
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            with httpx.Client(timeout=2.0) as client:
                while True:
                    if proc.poll() is not None:
                        raise RuntimeError(
                            f"the llama.cpp server exited with {proc.returncode}:\n{log_path.read_text()}"
                        )
                    with contextlib.suppress(httpx.TransportError):
                        if client.get(f"{base_url}/models").status_code == 200:
                            break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the llama.cpp server was not ready:\n{log_path.read_text()}")
                    time.sleep(0.3)
            yield base_url
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
