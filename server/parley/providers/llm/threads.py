"""From a blocking worker thread to the event loop: what Bedrock's providers share.

They run a blocking generator (botocore's event stream) in a worker thread and hand each item to
the event loop as it comes; the loop tells the worker to stop through :attr:`ThreadFeed.cancel`,
which the worker checks between items.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["ThreadFeed", "pump_event_stream"]


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


def pump_event_stream(open_stream: Callable[[], Iterable[Any]], feed: ThreadFeed, opened: list[Any]) -> None:
    """Open a blocking event stream and hand its events to ``feed`` (run in a worker thread).

    ``open_stream()`` makes the call and returns the stream (botocore's ``EventStream`` of
    ConverseStream or InvokeAgent); it is appended to ``opened`` once the call has answered, so
    the event loop can close it. Each event goes as ``("event", event)``, then ``("end", None)``;
    any exception, of the call or the stream, as ``("error", exc)`` (raised on the loop). Stops
    between events once ``feed.cancel`` is set, and closes the stream whatever happened.
    """
    events: Any = None
    try:
        events = open_stream()
        opened.append(events)
        for event in events:
            if feed.cancel.is_set():
                return
            feed.put("event", event)
        feed.put("end", None)
    except Exception as exc:  # delivered to the event loop, raised there
        feed.put("error", exc)
    finally:
        if events is not None:
            with contextlib.suppress(Exception):
                events.close()
