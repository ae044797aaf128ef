"""ReadAhead: what has arrived is taken at once, nothing waits for more, errors come after the
pieces before them, a slow consumer holds the reader back, and leaving stops the reader."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from parley.providers.llm.readahead import ReadAhead


async def _pieces(*script: bytes | float | Exception) -> AsyncIterator[bytes]:
    """Yields the bytes of ``script``; a float sleeps that long (0: a network read that finds
    data waiting), an exception is raised."""
    for step in script:
        if isinstance(step, Exception):
            raise step
        if isinstance(step, float):
            await asyncio.sleep(step)
        else:
            yield step


async def _all(body: ReadAhead) -> list[bytes]:
    taken = []
    while piece := await body.take():
        taken.append(piece)
    return taken


async def test_pieces_that_came_together_are_taken_together() -> None:
    async with ReadAhead(_pieces(b"a", b"b", b"c", 0.0, b"d", b"", b"e", 0.01, b"f")) as body:
        assert await _all(body) == [b"abc", b"de", b"f"]


async def test_take_returns_as_soon_as_a_piece_is_there() -> None:
    """A consumer that keeps up gets every piece alone, without waiting for the next one."""
    gate = asyncio.Event()

    async def pieces() -> AsyncIterator[bytes]:
        yield b"first"
        await gate.wait()
        yield b"second"

    async with ReadAhead(pieces()) as body:
        assert await asyncio.wait_for(body.take(), 1.0) == b"first"
        gate.set()
        assert await asyncio.wait_for(body.take(), 1.0) == b"second"
        assert await body.take() == b""


async def test_an_error_is_raised_after_the_pieces_read_before_it() -> None:
    async with ReadAhead(_pieces(b"a", 0.0, b"b", ConnectionResetError("gone"))) as body:
        assert await body.take() == b"a"
        assert await body.take() == b"b"
        with pytest.raises(ConnectionResetError, match="gone"):
            await body.take()


async def test_the_reader_waits_for_a_slow_consumer() -> None:
    read: list[int] = []

    async def pieces() -> AsyncIterator[bytes]:
        for i in range(100):
            read.append(i)
            yield b"x" * 10
            await asyncio.sleep(0)

    async with ReadAhead(pieces(), limit=30) as body:
        await asyncio.sleep(0.05)  # the consumer is busy elsewhere
        assert len(read) == 3  # 30 bytes ahead, then the reader waits
        assert await body.take() == b"x" * 30
        await asyncio.sleep(0.05)
        assert len(read) == 6


async def test_leaving_stops_the_reader() -> None:
    closed = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"more"
                await asyncio.sleep(0.001)
        finally:
            closed.set()

    async with ReadAhead(endless()) as body:
        assert await body.take()
    assert closed.is_set()


async def test_a_consumer_cancelled_while_it_waits_is_cancelled() -> None:
    async def silent() -> AsyncIterator[bytes]:
        await asyncio.Event().wait()
        yield b"never"

    async def consume() -> None:
        async with ReadAhead(silent()) as body:
            await body.take()

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
