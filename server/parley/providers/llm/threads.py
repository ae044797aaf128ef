"""From a blocking worker thread to the event loop: what the local model and Bedrock share.

Both run a blocking generator (llama.cpp's sampling loop, botocore's event stream) in a worker
thread and hand each item to the event loop as it comes; the loop tells the worker to stop
through :attr:`ThreadFeed.cancel`, which the worker checks between items.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

__all__ = ["ThreadFeed"]


class ThreadFeed:
    """``(kind, item)`` pairs put by a worker thread, got in order on the event loop.

    Create it on the event loop; :meth:`put` may be called from any thread.
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        #: Set by the event loop when it no longer wants items; the worker should return.
        self.cancel = threading.Event()

    def put(self, kind: str, item: Any) -> None:
        """Hand ``(kind, item)`` to the event loop (thread-safe)."""
        with contextlib.suppress(RuntimeError):  # the loop closed under us (process exit)
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (kind, item))

    async def get(self) -> tuple[str, Any]:
        """The next pair, waiting for it."""
        return await self._queue.get()
