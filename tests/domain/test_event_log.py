"""The in-process run event log: replay then live, numbering, and its memory bound."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from parley.domain.models import Message, MessageStatus, Role, StopReason
from parley.runs.events import AudioReady, Completed, Delta, event_size
from parley.runs.log import InProcessRunEventLog


def _message() -> Message:
    return Message(
        "m", "s", None, 0, Role.ASSISTANT, "", MessageStatus.COMPLETE, StopReason.END_TURN, "x", 0, 0,
        datetime.now(UTC),
    )  # fmt: skip


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_readers_get_the_stored_events_then_live_ones_until_the_end() -> None:
    log = InProcessRunEventLog(retention_s=60, max_bytes=1 << 20)
    log.open("r")
    assert await log.append("r", Delta("a")) == 1
    assert await log.append("r", Delta("b")) == 2
    reader = await log.read("r", 1)
    assert reader is not None
    got: list[int] = []

    async def read() -> None:
        async for item in reader:
            got.append(item.sequence_number)

    task = asyncio.create_task(read())
    await asyncio.sleep(0.01)
    assert got == [2]
    assert await log.append("r", Delta("c")) == 3
    assert await log.append("r", Completed(_message())) == 4
    await asyncio.wait_for(task, 1)
    assert got == [2, 3, 4]
    with pytest.raises(RuntimeError):
        await log.append("r", Delta("late"))


async def test_a_reader_leaving_does_not_disturb_the_others() -> None:
    log = InProcessRunEventLog(retention_s=60, max_bytes=1 << 20)
    log.open("r")
    one, two = await log.read("r", 0), await log.read("r", 0)
    assert one is not None and two is not None
    first = asyncio.create_task(anext(one))
    second = asyncio.create_task(anext(two))
    await asyncio.sleep(0.01)
    first.cancel()
    await log.append("r", Delta("a"))
    assert (await asyncio.wait_for(second, 1)).sequence_number == 1


async def test_finished_runs_are_evicted_after_their_retention() -> None:
    clock = FakeClock()
    log = InProcessRunEventLog(retention_s=10, max_bytes=1 << 20, clock=clock)
    log.open("done")
    await log.append("done", Completed(_message()))
    log.open("live")
    await log.append("live", Delta("a"))
    clock.now += 9
    assert await log.read("done", 0) is not None
    clock.now += 2
    assert await log.read("done", 0) is None
    assert await log.read("live", 0) is not None  # a live run is never evicted
    assert log.size == event_size(Delta("a"))


async def test_over_the_byte_bound_the_oldest_finished_runs_go_first() -> None:
    chunk = AudioReady(b"x" * 4000, "mp3", 24000, 0)
    per_run = event_size(chunk) + event_size(Completed(_message()))
    log = InProcessRunEventLog(retention_s=3600, max_bytes=per_run * 2)
    for run in ("a", "b", "c"):
        log.open(run)
        await log.append(run, chunk)
        await log.append(run, Completed(_message()))
    assert await log.read("a", 0) is None
    assert await log.read("b", 0) is not None and await log.read("c", 0) is not None
    assert log.size == per_run * 2
