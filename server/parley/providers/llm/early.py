"""A model call started while its turn is still being written: the request's latency overlaps the
write's.

A send stores the user message and the IN_PROGRESS reply (one transaction; 2-5 ms on SQLite, a
round trip or two on PostgreSQL) before its run reads the model's stream. A provider that can
*open* a stream (send the request and return once the response has started: HTTP status, retries)
gets that request sent as soon as the prompt is decided, in a task of its own, while the turn is
written: what the client waits for before the first token is then the longer of the two, not
their sum (``bench/``: time to first token).

Nothing of the reply reaches anyone before the turn is stored: the opened stream is only read by
the run, which starts after the write committed. When the write fails (or the branch moved and
the send is tried again), :meth:`EarlyStream.discard` cancels the request, or closes the response
if it had already started; the provider may then have read the prompt (its input tokens) of a
reply nobody will see. Providers without ``open`` (the local model, Bedrock) start when the run
does, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, Protocol, runtime_checkable

from parley.providers.llm.base import GenerationRequest, LLMProvider, ProviderEvent

__all__ = ["EarlyStream", "OpenedStream", "OpensStreams"]

log = logging.getLogger(__name__)


@runtime_checkable
class OpenedStream(Protocol):
    """A model response that has started: its events, once, and :meth:`aclose` to end it (also
    when it was never iterated: the response is closed either way)."""

    def __aiter__(self) -> AsyncIterator[ProviderEvent]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class OpensStreams(Protocol):
    """A provider that can send a request ahead of reading it (``open``); ``stream(request)`` is
    then ``open`` followed by reading every event."""

    async def open(self, request: GenerationRequest) -> OpenedStream: ...


#: Closing tasks of streams opened and discarded (kept referenced until they finish).
_closing: set[asyncio.Task[None]] = set()


class EarlyStream:
    """``provider``'s stream for ``request``, opened now if the provider can (see the module
    docstring). :meth:`take` it once to read it, or :meth:`discard` it (a no-op after ``take``)."""

    def __init__(self, provider: LLMProvider, request: GenerationRequest) -> None:
        self._provider = provider
        self._request = request
        self._task: asyncio.Task[OpenedStream] | None = None
        if isinstance(provider, OpensStreams):
            self._task = asyncio.create_task(provider.open(request), name=f"open {provider.name}")

    async def take(self) -> OpenedStream | AsyncIterator[ProviderEvent]:
        """The stream to read: the opened one (raising what opening it raised: the provider's
        mapped errors), else ``provider.stream(request)`` started now. Cancelling the caller
        cancels a request still being sent."""
        task, self._task = self._task, None
        if task is None:
            return self._provider.stream(self._request)
        return await task

    def discard(self) -> None:
        """The turn was not stored: cancel the request, or close the response it already got."""
        task, self._task = self._task, None
        if task is None:
            return
        if not task.done():
            task.cancel()
        task.add_done_callback(_close_opened)


def _close_opened(task: asyncio.Task[OpenedStream]) -> None:
    if task.cancelled():
        return
    if (exc := task.exception()) is not None:
        log.debug("a discarded early request failed: %s", exc)
        return
    closing = asyncio.get_running_loop().create_task(_aclose(task.result()))
    _closing.add(closing)
    closing.add_done_callback(_closing.discard)


async def _aclose(stream: Any) -> None:
    with contextlib.suppress(Exception):
        await stream.aclose()
