"""Read a response body ahead of its consumer, so the consumer takes what has arrived at once.

An HTTP client hands a streamed body over one piece at a time, and over HTTP/1.1 a piece is one
HTTP chunk, however many of them one network read brought (a server writes one chunk per SSE
event; h11 parses them out of its buffer one by one). A consumer that wants to merge the events
that are already here cannot tell, from the next piece, whether it was waiting in that buffer or
will take a network round trip. :class:`ReadAhead` iterates the pieces in a task of its own:
the pieces already buffered come out of the client without the task ever suspending, so when the
consumer, woken by the first of them, runs again, it finds all of them; :meth:`ReadAhead.take`
returns them joined. Nothing waits for more data: ``take`` returns as soon as anything is there.

At most ``limit`` bytes are read ahead of the consumer (then the task waits for ``take``), so a
slow consumer still slows the server down through TCP, as it did without the task.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import TracebackType

__all__ = ["ReadAhead"]


class ReadAhead:
    """``async with ReadAhead(pieces) as body``: ``await body.take()`` until it returns ``b""``.

    Errors raised by ``pieces`` are raised by ``take`` once the pieces read before them are taken.
    Leaving the ``async with`` block cancels the reading task (and waits for it).
    """

    def __init__(self, pieces: AsyncIterator[bytes], *, limit: int = 256 * 1024) -> None:
        self._pieces = pieces
        self._limit = limit
        self._loop = asyncio.get_running_loop()
        self._ready: list[bytes] = []
        self._size = 0
        self._ended = False
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None  # take() waiting for a piece
        self._room: asyncio.Future[None] | None = None  # the task waiting for take()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ReadAhead:
        self._task = self._loop.create_task(self._read())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # this task is being cancelled too, not only the reader

    async def take(self) -> bytes:
        """Every piece read since the last call, joined; waits only when there is none yet.
        ``b""`` at the end of the body."""
        if not self._ready and not self._ended:
            self._waiter = waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        ready = self._ready
        if ready:
            self._ready = []
            self._size = 0
            room = self._room
            if room is not None and not room.done():
                room.set_result(None)
            return ready[0] if len(ready) == 1 else b"".join(ready)
        if self._error is not None:
            raise self._error
        return b""

    async def _read(self) -> None:
        try:
            async for piece in self._pieces:
                if not piece:
                    continue
                self._ready.append(piece)
                self._size += len(piece)
                self._wake()
                if self._size >= self._limit:
                    self._room = room = self._loop.create_future()
                    try:
                        await room
                    finally:
                        self._room = None
        except Exception as exc:  # the consumer's to handle, after the pieces before it
            self._error = exc
        finally:
            self._ended = True
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
