"""The run event log: every event of a run with its sequence number, replayable, then live.

``RunEventLog`` is the interface; :class:`InProcessRunEventLog` is the embedded default (one
process). A log for many replicas (Redis Streams) implements the same four methods.

Memory bound of the in-process log: every event of a run in progress is kept (a run's events are
bounded by its reply: at most ``max_output_tokens`` deltas plus the audio of that text); a
finished run's events are kept for ``retention_s`` seconds after its terminal event
(``PARLEY_RUN_EVENTS_RETENTION_SECONDS``), and finished runs are evicted oldest first whenever the
log holds more than ``max_bytes`` (``PARLEY_RUN_EVENTS_MAX_BYTES``, counted by
:func:`parley.runs.events.event_size`). A reply whose events were evicted is replayed from the
stored message instead (runs/replay.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from parley.runs.events import RunEvent, Sequenced, event_size, is_terminal

__all__ = ["InProcessRunEventLog", "RunEventLog"]

log = logging.getLogger(__name__)


class RunEventLog(Protocol):
    """Where a run's events go, so that any subscriber can read them from any point."""

    def open(self, run_id: str) -> None:
        """Start the (empty) log of a new run."""

    async def append(self, run_id: str, event: RunEvent) -> int:
        """Append ``event``; returns its sequence number (1 for the first). A terminal event
        (``Completed``/``Failed``) closes the log."""

    async def read(self, run_id: str, after: int) -> AsyncIterator[Sequenced] | None:
        """The events after sequence number ``after``: those stored, then live ones as they
        are appended, ending after the terminal event. ``None`` if the log is unknown (never
        opened here, or evicted)."""

    async def close(self) -> None:
        """Release resources."""


class _Entry:
    __slots__ = ("changed", "events", "finished_at", "size")

    def __init__(self) -> None:
        self.events: list[RunEvent] = []
        self.size = 0
        self.finished_at: float | None = None
        self.changed = asyncio.Event()


class InProcessRunEventLog:
    """``RunEventLog`` in this process's memory (see the module docstring for the bound).

    Args:
        retention_s: seconds a finished run's events stay readable.
        max_bytes: total bytes of events kept, beyond which finished runs are evicted.
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(
        self, *, retention_s: float, max_bytes: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._retention = retention_s
        self._max_bytes = max_bytes
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._finished: OrderedDict[str, _Entry] = OrderedDict()  # oldest finished first
        self.size = 0  # bytes of events kept, all runs

    def open(self, run_id: str) -> None:
        self._entries[run_id] = _Entry()

    async def append(self, run_id: str, event: RunEvent) -> int:
        entry = self._entries[run_id]
        if entry.finished_at is not None:
            raise RuntimeError(f"run {run_id} already ended")
        entry.events.append(event)
        n = event_size(event)
        entry.size += n
        self.size += n
        if is_terminal(event):
            entry.finished_at = self._clock()
            self._finished[run_id] = entry
        changed, entry.changed = entry.changed, asyncio.Event()
        changed.set()  # wakes every reader waiting on the old event
        if entry.finished_at is not None:
            self.evict()
        return len(entry.events)

    async def read(self, run_id: str, after: int) -> AsyncIterator[Sequenced] | None:
        self.evict()
        entry = self._entries.get(run_id)
        return None if entry is None else _follow(entry, after)

    def evict(self) -> None:
        """Drop finished runs past their retention, then the oldest finished ones while over the
        byte bound."""
        now = self._clock()
        while self._finished:
            run_id, entry = next(iter(self._finished.items()))
            expired = entry.finished_at is not None and now - entry.finished_at >= self._retention
            if not expired and self.size <= self._max_bytes:
                break
            self._drop(run_id)
        if self.size > self._max_bytes:
            log.warning("run event log holds %d bytes of live runs (bound %d)", self.size, self._max_bytes)

    def _drop(self, run_id: str) -> None:
        entry = self._entries.pop(run_id)
        self._finished.pop(run_id, None)
        self.size -= entry.size

    async def close(self) -> None:
        self._entries.clear()
        self._finished.clear()
        self.size = 0


async def _follow(entry: _Entry, after: int) -> AsyncIterator[Sequenced]:
    index = max(0, after)
    while True:
        while index < len(entry.events):
            index += 1
            yield Sequenced(index, entry.events[index - 1])
        if entry.finished_at is not None:
            return
        await entry.changed.wait()
