"""The run event log of many replicas: Redis Streams, with this replica's own runs in memory.

Each run's events are the stream ``parley:run:{run_id}`` whose entry ids are ``0-{sequence
number}``, one field ``e`` holding the encoded event (runs/codec.py). The replica running a run
is its only writer:

- its own subscribers read the run from an :class:`~parley.runs.log.InProcessRunEventLog`, so
  a reply streams at in-memory speed and goes on streaming while Redis is down;
- a background writer copies every appended event to the run's stream, batched (one pipeline
  per batch: ``XADD ... MAXLEN ~ max_events`` and ``EXPIRE retention_s``), so the token path never
  waits for Redis. A batch that fails is logged and dropped: followers on other replicas then
  miss those events (they stop at the gap, see below) while local subscribers are unaffected.

Any replica reads any run: ``XRANGE`` for what is stored, then ``XREAD BLOCK`` for what comes.

Bounds: a stream keeps at most about ``max_events`` entries (``PARLEY_RUN_EVENTS_MAX_PER_RUN``;
more than any reply writes: ``max_output_tokens`` deltas, its audio chunks and tool events). It
expires ``retention_s`` seconds after the run's terminal event
(``PARLEY_RUN_EVENTS_RETENTION_SECONDS``), and ``live_ttl_s`` after its last event while the run
has not ended (long enough for a run waiting for tool outputs), so the events of a run whose
replica died disappear by themselves. A reader that finds a gap (events trimmed or
lost) ends there; the stored message is then the source of truth (``GetMessage``, or a resume
after the run ended, which is rebuilt from it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from parley.runs.codec import decode_event, encode_event
from parley.runs.events import ActionRequired, RunEvent, Sequenced, is_terminal
from parley.runs.log import InProcessRunEventLog

__all__ = ["RedisRunEventLog", "stream_key"]

log = logging.getLogger(__name__)

#: How long one XREAD waits for new entries before the reader checks the stream still exists (ms).
BLOCK_MS = 1000


def stream_key(run_id: str) -> str:
    """The Redis key of run ``run_id``'s events."""
    return f"parley:run:{run_id}"


class RedisRunEventLog:
    """``RunEventLog`` shared by replicas (see the module docstring).

    Args:
        redis: a redis-py asyncio client (``decode_responses=False``).
        local: the in-memory log of this replica's runs.
        retention_s: seconds a stream lives after the run's terminal event.
        live_ttl_s: seconds a stream lives after its last event while the run goes on.
        max_events: approximate most entries per stream (``MAXLEN ~``).
    """

    def __init__(
        self,
        redis: Redis,
        local: InProcessRunEventLog,
        *,
        retention_s: float,
        live_ttl_s: float,
        max_events: int,
    ) -> None:
        self._redis = redis
        self._local = local
        self._retention_ms = max(1000, int(retention_s * 1000))
        self._live_ttl_ms = max(self._retention_ms, int(live_ttl_s * 1000))
        self._max_events = max_events
        self._queue: asyncio.Queue[tuple[str, int, bytes, bool]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self.failed_batches = 0

    def open(self, run_id: str) -> None:
        self._local.open(run_id)
        if self._writer is None:
            self._writer = asyncio.create_task(self._write(), name="run event log writer")

    async def append(self, run_id: str, event: RunEvent) -> int:
        sequence_number = await self._local.append(run_id, event)
        self._queue.put_nowait((run_id, sequence_number, encode_event(event), is_terminal(event)))
        return sequence_number

    async def read(self, run_id: str, after: int) -> AsyncIterator[Sequenced] | None:
        events = await self._local.read(run_id, after)
        if events is not None:
            return events
        key = stream_key(run_id)
        try:
            if not await self._redis.exists(key):
                return None
        except RedisError as exc:
            log.warning("run event log: cannot read run %s from Redis: %s", run_id, exc)
            return None
        return self._follow(key, after)

    async def flush(self) -> None:
        """Wait until every event appended so far was written to Redis (or dropped)."""
        await self._queue.join()

    async def close(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout=2.0)
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        await self._local.close()

    async def _write(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                pipe = self._redis.pipeline(transaction=False)
                ttl: dict[str, int] = {}
                for run_id, sequence_number, data, terminal in batch:
                    key = stream_key(run_id)
                    pipe.xadd(
                        key,
                        {"e": data},
                        id=f"0-{sequence_number}",
                        maxlen=self._max_events,
                        approximate=True,
                    )
                    ttl[key] = self._retention_ms if terminal else self._live_ttl_ms
                for key, ms in ttl.items():
                    pipe.pexpire(key, ms)
                await pipe.execute()
            except RedisError as exc:
                self.failed_batches += 1
                log.warning("run event log: %d event(s) not written to Redis: %s", len(batch), exc)
            except Exception:
                self.failed_batches += 1
                log.exception("run event log: writing to Redis failed")
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _follow(self, key: str, after: int) -> AsyncIterator[Sequenced]:
        """Entries of ``key`` after ``after``, stored then live, until the terminal event, a gap,
        the stream's disappearance, or a pause with nothing after it (a follower on another
        replica stops at a pause, as a local subscriber does; SubmitToolOutputs follows again)."""
        expected = max(0, after) + 1
        last_id = f"0-{max(0, after)}"
        while True:
            try:
                reply: Any = await self._redis.xread({key: last_id}, count=512, block=BLOCK_MS)
            except RedisError as exc:
                log.warning("run event log: reading %s failed: %s", key, exc)
                return
            entries = reply[0][1] if reply else []
            if not entries:
                try:
                    if not await self._redis.exists(key):
                        return
                except RedisError:
                    return
                continue
            for index, (entry_id, fields) in enumerate(entries):
                sequence_number = int(entry_id.split(b"-", 1)[1])
                if sequence_number != expected:
                    log.warning("run event log: %s lacks event %d (next: %d)", key, expected, sequence_number)
                    return
                event = decode_event(fields[b"e"])
                yield Sequenced(sequence_number, event)
                if is_terminal(event):
                    return
                last = index == len(entries) - 1
                if isinstance(event, ActionRequired) and last and not await self._has_after(key, entry_id):
                    return
                expected += 1
                last_id = entry_id.decode()

    async def _has_after(self, key: str, entry_id: bytes) -> bool:
        try:
            more = await self._redis.xrange(key, min=b"(" + entry_id, count=1)
        except RedisError:
            return False
        return bool(more)
