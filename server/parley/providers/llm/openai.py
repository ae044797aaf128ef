"""Hosted models through the OpenAI chat completions API: OpenAI itself and compatible servers.

One class serves every OpenAI-compatible endpoint (Groq, vLLM, Ollama, a llama.cpp server ...);
each configured endpoint is one provider instance with its own name (``openai``, ``groq`` ...),
``base_url`` and key. Replies stream with ``stream_options={"include_usage": True}``, so the
final chunk carries the provider's own token counts. Servers that ignore that option (llama.cpp's
server does) get the stated estimate instead: the prompt estimate of
:mod:`parley.providers.llm.hosted` for input, one token per streamed chunk (text or tool-call
fragment) for output.

Reading the stream: the SDK sends the request (auth, timeouts, retries, its errors) with its
client's own ``post`` and leaves the body unread, and the Server-Sent Events of the body are decoded here
(:class:`~parley.providers.llm.openai_wire.EventStream`, msgspec structs of only the fields
used), not into the SDK's pydantic models, which cost most of a token's CPU. The text of the
chunks that have arrived when the provider reads again is yielded as one ``TextDeltaEvent``
whose ``tokens`` is their number (the body is read ahead in a task of its own:
:mod:`parley.providers.llm.readahead`, since over HTTP/1.1 the client hands over one HTTP chunk
at a time even when one network read brought many): a process that falls behind a fast server
(or a saturated one) catches up in one delta instead of many, while one that keeps up gets each
chunk alone, as soon as it is read (nothing waits for more). A chunk that is not JSON ends the
reply (``Unavailable``, PROVIDER_ERROR) after the text before it.

Tools (the wire shapes are in :mod:`parley.providers.llm.openai_wire`): ``request.tools`` are
sent as function tools (nothing is sent when there are none), and the streamed
``delta.tool_calls`` fragments are assembled into complete calls, yielded as one
``ToolCallEvent`` each, in ``index`` order, when the choice's ``finish_reason`` arrives, so every
``TextDeltaEvent`` of a step comes before its first ``ToolCallEvent``. Then the stop reason is
``TOOL_USE``: for ``finish_reason`` ``tool_calls``, and also ``stop`` (some compatible servers
say that after calls). A step cut by ``length`` or ``content_filter`` yields no calls (the last
one's arguments are cut off; the stop reason says why); a ``tool_calls`` finish with no call
streamed is ``END_TURN`` (there is nothing to run).

Retries: the SDK retries a request that fails with a connection error, HTTP 408/409/429 or 5xx
before any response, i.e. before the first token or tool call, ``max_retries`` times
(``PARLEY_PROVIDER_MAX_RETRIES``, default 2, so 3 attempts), sleeping
``min(0.5 s * 2**n, 8 s)`` minus up to 25 % random jitter between attempts, or the server's
``Retry-After`` when it sends one. Once the response has started streaming (text or tool-call
fragments), nothing is retried: an error ends the reply, which the conversation engine stores
INCOMPLETE with the reason.

Closing the event stream (client cancel) closes the HTTP response, which stops the generation on
the server side as soon as it notices the closed connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

import anyio
import httpx2
import openai
from openai import AsyncOpenAI, DefaultAioHttpClient

from parley.domain.errors import Reason, Unavailable
from parley.domain.models import StopReason
from parley.providers.llm.base import (
    ChatTurn,
    GenerationRequest,
    ProviderEvent,
    StopEvent,
    TextDeltaEvent,
    ToolCallEvent,
    UsageEvent,
)
from parley.providers.llm.hosted import context_window_for, estimate_tokens
from parley.providers.llm.openai_wire import (
    EventStream,
    ToolCallAssembler,
    chat_messages,
    chat_tools,
    decode_chunk,
)
from parley.providers.llm.readahead import ReadAhead
from parley.providers.openai_errors import map_openai_error

__all__ = ["FINISH_REASONS", "OpenAIChatProvider"]

log = logging.getLogger(__name__)

#: ``finish_reason`` of the chat completions API → Parley's stop reason.
FINISH_REASONS: Mapping[str, StopReason] = {
    "stop": StopReason.END_TURN,
    "length": StopReason.MAX_OUTPUT_TOKENS,
    "content_filter": StopReason.CONTENT_FILTER,
    "tool_calls": StopReason.TOOL_USE,
    "function_call": StopReason.TOOL_USE,
}

#: Finish reasons after which the streamed tool calls are complete (see the module docstring).
_CALLS_COMPLETE = frozenset({"tool_calls", "function_call", "stop"})

#: What reading the response body may raise (``openai._httpx2.request_exceptions``, which the SDK
#: maps to ``APIConnectionError``, ``APITimeoutError`` for timeouts).
_TRANSPORT_ERRORS = (httpx2.RequestError, ssl.SSLError, anyio.EndOfStream)

#: Request options that leave the response body unread for the caller to stream (the header the
#: SDK's ``with_streaming_response`` sends: ``openai._constants.RAW_RESPONSE_HEADER``).
_STREAMED: Any = {"headers": {"X-Stainless-Raw-Response": "stream"}}

#: The longest wait for the end of the body after ``[DONE]`` (s), as the SDK's.
_DRAIN_S = 0.1

#: OpenAI's reasoning models refuse ``max_tokens`` and take ``max_completion_tokens``; most
#: compatible servers (llama.cpp, Ollama, older vLLM) know only ``max_tokens``.
_COMPLETION_TOKENS_MODELS = ("o1", "o3", "o4", "gpt-5")


class OpenAIChatProvider:
    """``LLMProvider`` for one OpenAI-compatible endpoint.

    Args:
        name: the registry name, the ``provider`` of ``provider/model`` (``openai``, ``groq`` ...).
        base_url: the API root, e.g. ``https://api.openai.com/v1``.
        api_key: the endpoint's key; servers without keys get a placeholder (the SDK needs one).
        max_retries: retries before the first token (see the module docstring).
        timeout_s: connect and read timeout, seconds; a stream silent for longer ends with
            ``Unavailable``.
        context_windows: ``PARLEY_MODEL_CONTEXT_WINDOWS`` (``provider/model`` → tokens).
        client: an existing ``AsyncOpenAI`` (tests); then :meth:`close` leaves it open.
    """

    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        api_key: str,
        max_retries: int = 2,
        timeout_s: float = 60.0,
        context_windows: Mapping[str, int] | None = None,
        client: AsyncOpenAI | None = None,
    ) -> None:
        self.name = name
        self._owns_client = client is None
        self._client = client or AsyncOpenAI(
            api_key=api_key or "no-key",
            base_url=base_url,
            max_retries=max_retries,
            timeout=timeout_s,
            # aiohttp under the SDK (its `aiohttp` extra): reading a stream costs about half the
            # CPU of the default transport (bench/openai_parse.py's loopback figures).
            http_client=DefaultAioHttpClient(timeout=timeout_s),
        )
        self._context_windows = dict(context_windows or {})

    def context_window(self, model: str) -> int:
        """From ``PARLEY_MODEL_CONTEXT_WINDOWS``, else the table in ``hosted.py``, else 8192."""
        return context_window_for(self.name, model, self._context_windows)

    def supports_tools(self, model: str) -> bool:
        """True for every model: tools are part of the chat completions API. A server or model
        that cannot take them answers with an error (llama.cpp's server without ``--jinja``:
        HTTP 400, ``PROVIDER_REJECTED_INPUT``) or ignores them and answers in text."""
        return True

    def count_tokens(self, model: str, turns: Sequence[ChatTurn]) -> int:
        """An estimate (no tokenizer is known for hosted models; see ``hosted.py``)."""
        return estimate_tokens(turns)

    def _arguments(self, request: GenerationRequest) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "model": request.model,
            "messages": chat_messages(request.turns),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            arguments["tools"] = chat_tools(request.tools)
        if self.name == "openai" and request.model.startswith(_COMPLETION_TOKENS_MODELS):
            arguments["max_completion_tokens"] = request.max_output_tokens
        else:
            arguments["max_tokens"] = request.max_output_tokens
        if request.temperature is not None:
            arguments["temperature"] = request.temperature
        return arguments

    async def open(self, request: GenerationRequest) -> _OpenedReply:
        """Send the request and return once the response has started (HTTP status checked, the
        SDK's retries done): :class:`~parley.providers.llm.early.EarlyStream` sends it while the
        turn is written. Raises what :meth:`stream` raises before its first event."""
        try:
            # The client's own POST (the SDK's way to any endpoint: auth, retries, errors) with the
            # arguments as they are: they are JSON already, and the SDK's check of a typed
            # ``create`` call costs more CPU than the rest of the request.
            response = await self._client.post(
                "/chat/completions", cast_to=httpx2.Response, body=self._arguments(request), options=_STREAMED
            )
        except openai.OpenAIError as exc:
            raise map_openai_error(exc, provider=self.name) from exc
        return _OpenedReply(self.name, request, response)

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[ProviderEvent, None]:
        """Stream a reply: text deltas, then the step's tool calls (if any), usage and the stop
        reason (see the module docstring).

        Raises ``ResourceExhausted``/``Unavailable``/``InvalidArgument`` (see
        :func:`parley.providers.openai_errors.map_openai_error`), with ``metadata["provider"]``;
        a stream that ends without a finish reason raises ``Unavailable`` (PROVIDER_UNAVAILABLE),
        one that is not JSON ``Unavailable`` (PROVIDER_ERROR).
        """
        opened = await self.open(request)
        try:
            async for event in opened:
                yield event
        finally:
            await opened.aclose()

    async def close(self) -> None:
        """Close the HTTP client if this provider created it."""
        if self._owns_client:
            await self._client.close()


class _OpenedReply:
    """A streamed chat completion whose response has started: its events once (``async for``),
    :meth:`aclose` to end it, read or not (it closes the HTTP response)."""

    def __init__(self, provider: str, request: GenerationRequest, http: httpx2.Response) -> None:
        self._provider = provider
        self._request = request
        self._http = http
        self._events: AsyncGenerator[ProviderEvent, None] | None = None

    def __aiter__(self) -> AsyncGenerator[ProviderEvent, None]:
        if self._events is not None:
            raise RuntimeError("the stream is read once")
        self._events = self._read()
        return self._events

    async def aclose(self) -> None:
        """Idempotent, as the generator's and the response's own ``aclose``."""
        try:
            if self._events is not None:
                await self._events.aclose()
        finally:
            await self._http.aclose()

    async def _read(self) -> AsyncGenerator[ProviderEvent, None]:
        name, http, request = self._provider, self._http, self._request
        reply = _StreamedReply(name)
        try:
            async with contextlib.aclosing(http.aiter_bytes()) as pieces, ReadAhead(pieces) as body:
                while piece := await body.take():
                    for event in reply.read(piece, http.request):
                        yield event
                    if reply.failure is not None:
                        raise reply.failure
                    if reply.done:
                        await _drain(body, http)
                        break
        except openai.OpenAIError as exc:
            raise map_openai_error(exc, provider=name) from exc
        except _TRANSPORT_ERRORS as exc:  # reading the body (the SDK maps the request's own)
            lost = (
                openai.APITimeoutError(http.request)
                if isinstance(exc, httpx2.TimeoutException)
                else openai.APIConnectionError(request=http.request)
            )
            raise map_openai_error(lost, provider=name) from exc
        if reply.finish is None:
            raise Unavailable(
                f"{name} ended the stream before the reply was finished",
                reason=Reason.PROVIDER_UNAVAILABLE,
                metadata={"provider": name},
            )
        usage = reply.usage or (estimate_tokens(request.turns), reply.chunks)
        stop = FINISH_REASONS.get(reply.finish, StopReason.END_TURN)
        if reply.calls:
            stop = StopReason.TOOL_USE
        elif stop is StopReason.TOOL_USE:
            stop = StopReason.END_TURN  # no call came: nothing to run
        yield UsageEvent(*usage)
        yield StopEvent(stop)


class _StreamedReply:
    """One streamed reply as it is read: response body pieces in, provider events out."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.finish: str | None = None
        self.usage: tuple[int, int] | None = None
        #: Streamed chunks with text or tool-call fragments (the output count without usage).
        self.chunks = 0
        self.calls = 0
        #: ``[DONE]`` came.
        self.done = False
        #: What ends the stream after this read's events: an ``error`` object or malformed JSON.
        self.failure: Exception | None = None
        self._events = EventStream()
        self._assembler = ToolCallAssembler()

    def read(self, piece: bytes, request: httpx2.Request) -> list[ProviderEvent]:
        """The events of the chunks ``piece`` completes: the text of consecutive chunks as one
        ``TextDeltaEvent`` (never waiting for more), the tool calls when the finish reason says
        they are complete. Stops at ``[DONE]`` (``done``) or a chunk that fails (``failure``)."""
        out: list[ProviderEvent] = []
        text: list[str] = []  # content not yielded yet
        assembler = self._assembler
        for data in self._events.feed(piece):
            if data[:6] == b"[DONE]":
                self.done = True
                break
            try:
                chunk = decode_chunk(data)
            except ValueError as exc:  # not JSON, or not a chunk
                self.failure = Unavailable(
                    f"{self.provider} sent a malformed stream",
                    reason=Reason.PROVIDER_ERROR,
                    metadata={"provider": self.provider},
                )
                self.failure.__cause__ = exc
                break
            if chunk.error:
                self.failure = _stream_error(chunk.error, request)
                break
            if chunk.usage is not None:
                self.usage = (chunk.usage.prompt_tokens or 0, chunk.usage.completion_tokens or 0)
            for choice in chunk.choices or ():  # one choice: ``n`` is never set
                delta = choice.delta
                if delta is not None:
                    if delta.content:
                        text.append(delta.content)
                    if delta.tool_calls:
                        self.chunks += 1
                        assembler.add(delta.tool_calls)
                if choice.finish_reason and self.finish is None:
                    self.finish = choice.finish_reason
                    if assembler and self.finish not in _CALLS_COMPLETE:
                        log.info("%s: tool calls dropped, the step ended with %s", self.provider, self.finish)
                    elif assembler:
                        if text:
                            out.append(self._delta(text))
                            text = []
                        for call in assembler.take():
                            self.calls += 1
                            out.append(ToolCallEvent(call))
        if text:
            out.append(self._delta(text))
        return out

    def _delta(self, text: list[str]) -> TextDeltaEvent:
        """One delta for the content of consecutive chunks."""
        self.chunks += len(text)
        return TextDeltaEvent(text[0]) if len(text) == 1 else TextDeltaEvent("".join(text), len(text))


def _stream_error(error: Any, request: httpx2.Request) -> openai.APIError:
    """The SDK's exception for an ``error`` object inside the stream."""
    message = error.get("message") if isinstance(error, dict) else None
    if not message or not isinstance(message, str):
        message = "An error occurred during streaming"
    return openai.APIError(message, request, body=error)


async def _drain(body: ReadAhead, response: httpx2.Response) -> None:
    """After ``[DONE]``: read what is left of an HTTP/1.1 body (its end, normally in the same read)
    for at most 0.1 s, so the connection goes back to the pool, as the SDK does."""
    if response.http_version != "HTTP/1.1":
        return
    with contextlib.suppress(TimeoutError, httpx2.HTTPError):
        async with asyncio.timeout(_DRAIN_S):
            while await body.take():
                pass
